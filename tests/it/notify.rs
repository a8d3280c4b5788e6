//! notify-svc end to end: order events become notifications with the right text, listed newest
//! first across pages, one per event even when an event is delivered twice, streamed live to
//! their user only, and delivered to a webhook with a verifiable signature, retried, and given up
//! on after the configured attempts.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use orderflow_proto::consumer::v1::consumer_status_service_client::ConsumerStatusServiceClient;
use orderflow_proto::consumer::v1::GetConsumerStatusRequest;
use orderflow_proto::events::v1::OrderPaid;
use orderflow_proto::notify::v1::{
    ListNotificationsRequest, Notification, SubscribeNotificationsRequest,
};
use orderflow_proto::order::v1::{Order, OrderItem, OrderStatus};
use orderflow_proto::topics;
use orderflow_tests::orders;
use orderflow_tests::service::Configure;
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{assert_status, eventually, order_request};
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

async fn list(
    stack: &Stack,
    user_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<Notification>, String), tonic::Status> {
    let answer = stack
        .notify
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: user_id.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await?
        .into_inner();
    Ok((answer.notifications, answer.next_page_token))
}

/// Waits until `user_id` has exactly `count` notifications; they are returned newest first.
async fn wait_for_notifications(stack: &Stack, user_id: &str, count: usize) -> Vec<Notification> {
    eventually(
        &format!("{count} notifications for {user_id}"),
        WAIT,
        || async {
            let (notifications, _) = list(stack, user_id, 0, "").await.ok()?;
            (notifications.len() == count).then_some(notifications)
        },
    )
    .await
}

/// Every page of `user_id`'s notifications at `page_size`, and how many pages there were.
async fn all_pages(stack: &Stack, user_id: &str, page_size: i32) -> (Vec<Notification>, usize) {
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (page, next) = list(stack, user_id, page_size, &token)
            .await
            .expect("ListNotifications");
        pages += 1;
        assert!(page.len() <= page_size as usize, "page of {}", page.len());
        all.extend(page);
        if next.is_empty() {
            return (all, pages);
        }
        token = next;
        assert!(pages < 100, "pagination does not end");
    }
}

fn texts(notifications: &[Notification]) -> Vec<&str> {
    notifications
        .iter()
        .map(|notification| notification.text.as_str())
        .collect()
}

fn created_micros(notification: &Notification) -> i128 {
    let at = notification.created_at.as_ref().expect("created_at");
    i128::from(at.seconds) * 1_000_000 + i128::from(at.nanos) / 1_000
}

#[tokio::test]
async fn an_orders_life_becomes_notifications_listed_newest_first() {
    let stack = Stack::start().await;
    stack.set_stock("NOTE-1", 10, 9_950).await;
    let mut client = stack.order.clone();
    let user = "nina";

    // One step at a time, each stored before the next happens, so "newest first" is known.
    let order = stack
        .create_order(order_request("n1", user, &[("NOTE-1", 2)]))
        .await
        .expect("CreateOrder");
    let id = order.order_id.clone();
    wait_for_notifications(&stack, user, 1).await;
    orders::pay(&mut client, &order, "pay-n1")
        .await
        .expect("PayOrder");
    wait_for_notifications(&stack, user, 2).await;
    orders::ship(&mut client, &id, "SF-1001")
        .await
        .expect("ShipOrder");
    wait_for_notifications(&stack, user, 3).await;
    orders::complete(&mut client, &id)
        .await
        .expect("CompleteOrder");
    wait_for_notifications(&stack, user, 4).await;
    let other = stack
        .create_order(order_request("n2", user, &[("NOTE-1", 1)]))
        .await
        .expect("CreateOrder");
    wait_for_notifications(&stack, user, 5).await;
    orders::cancel(&mut client, &other.order_id, "changed my mind")
        .await
        .expect("CancelOrder");
    let listed = wait_for_notifications(&stack, user, 6).await;

    let other_id = &other.order_id;
    assert_eq!(
        texts(&listed),
        [
            format!("Order {other_id} cancelled: changed my mind"),
            format!("Order {other_id} placed: 1 item, ¥99.50"),
            format!("Order {id} completed"),
            format!("Order {id} shipped: tracking SF-1001"),
            format!("Order {id} paid: 2 items, ¥199.00"),
            format!("Order {id} placed: 2 items, ¥199.00"),
        ]
    );
    let types: Vec<&str> = listed.iter().map(|n| n.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            topics::ORDER_CANCELLED,
            topics::ORDER_CREATED,
            topics::ORDER_COMPLETED,
            topics::ORDER_SHIPPED,
            topics::ORDER_PAID,
            topics::ORDER_CREATED,
        ]
    );
    for notification in &listed {
        assert_eq!(notification.user_id, user);
        assert!(!notification.event_id.is_empty() && !notification.notification_id.is_empty());
    }
    for pair in listed.windows(2) {
        assert!(
            created_micros(&pair[0]) > created_micros(&pair[1]),
            "newest first: {pair:?}"
        );
    }

    // Pages: no duplicates, no gaps, the last one without a token.
    for (page_size, pages) in [(1, 6), (4, 2), (6, 1), (500, 1)] {
        let (paged, count) = all_pages(&stack, user, page_size).await;
        assert_eq!(paged, listed, "page size {page_size}");
        assert_eq!(count, pages, "pages at size {page_size}");
    }
    let ids: HashSet<&str> = listed.iter().map(|n| n.notification_id.as_str()).collect();
    assert_eq!(ids.len(), 6);
    // Another user's list is empty.
    assert_eq!(list(&stack, "nobody", 0, "").await.unwrap().0, []);

    // Bad arguments, each named.
    let cases = [
        ("no user", "", 0, "", "user_id"),
        ("user with a space", "a b", 0, "", "user_id"),
        ("negative page size", user, -1, "", "page_size"),
        ("page too large", user, 501, "", "page_size"),
        ("forged token", user, 0, "not-a-token", "page_token"),
        ("forged hex token", user, 0, "31322e6e6f7065", "page_token"),
    ];
    for (case, user_id, page_size, token, field) in cases {
        let refused = list(&stack, user_id, page_size, token).await.unwrap_err();
        assert_status(case, &refused, Code::InvalidArgument, field);
    }

    // The log sink (the default) delivered every one, at the first attempt.
    eventually("every notification delivered", WAIT, || async {
        let undelivered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications \
             WHERE delivery_state <> 'delivered' OR delivery_attempts <> 1",
        )
        .fetch_one(&stack.db)
        .await
        .ok()?;
        (undelivered == 0).then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn an_expired_order_is_notified_as_expired() {
    let stack = Stack::start_with(Options {
        payment_deadline_secs: Some(1),
        ..Options::default()
    })
    .await;
    stack.set_stock("NOTE-EXP", 10, 100).await;
    let order = stack
        .create_order(order_request("e1", "evan", &[("NOTE-EXP", 1)]))
        .await
        .expect("CreateOrder");
    let listed = wait_for_notifications(&stack, "evan", 2).await;
    let id = &order.order_id;
    assert_eq!(
        texts(&listed),
        [
            format!("Order {id} expired: it was not paid in time"),
            format!("Order {id} placed: 1 item, ¥1.00"),
        ]
    );
    assert_eq!(listed[0].event_type, topics::ORDER_CANCELLED);
    stack.stop().await;
}

fn paid_event(user_id: &str, order_id: &str) -> OrderPaid {
    OrderPaid {
        event_id: uuid::Uuid::now_v7().to_string(),
        order_id: order_id.into(),
        occurred_at: None,
        order: Some(Order {
            order_id: order_id.into(),
            user_id: user_id.into(),
            items: vec![OrderItem {
                sku: "RAW-1".into(),
                quantity: 1,
                unit_price_cents: 500,
            }],
            total_cents: 500,
            currency: "USD".into(),
            status: OrderStatus::Paid.into(),
            version: 2,
            payment_id: "p-raw".into(),
            ..Order::default()
        }),
        payment_id: "p-raw".into(),
        amount_cents: 500,
    }
}

#[tokio::test]
async fn a_redelivered_event_makes_one_notification_and_bad_ones_are_dead_lettered() {
    let stack = Stack::start().await;
    let order_id = uuid::Uuid::now_v7().to_string();
    let event = paid_event("rita", &order_id);
    let bytes = event.encode_to_vec();
    stack
        .publish_raw(topics::ORDER_PAID, &order_id, &bytes)
        .await;
    stack
        .publish_raw(topics::ORDER_PAID, &order_id, &bytes)
        .await;
    // Never notifications: not protobuf, and an order without its user.
    stack
        .publish_raw(topics::ORDER_PAID, &order_id, b"\xff\xff not an event")
        .await;
    let no_user = paid_event("", &order_id);
    stack
        .publish_raw(topics::ORDER_PAID, &order_id, &no_user.encode_to_vec())
        .await;
    // Same key, so the same partition: once this one is stored, all before it were handled.
    let marker = paid_event("rita", &order_id);
    stack
        .publish_raw(topics::ORDER_PAID, &order_id, &marker.encode_to_vec())
        .await;

    let listed = wait_for_notifications(&stack, "rita", 2).await;
    let events: HashSet<&str> = listed.iter().map(|n| n.event_id.as_str()).collect();
    assert_eq!(
        events,
        HashSet::from([event.event_id.as_str(), marker.event_id.as_str()])
    );
    assert_eq!(
        listed[1].text,
        format!("Order {order_id} paid: 1 item, $5.00")
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE event_id = $1")
        .bind(uuid::Uuid::parse_str(&event.event_id).unwrap())
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // The two bad ones went to the dead-letter topic (counted by notify-svc's consumer status).
    let mut status =
        ConsumerStatusServiceClient::connect(format!("http://{}", stack.addresses.notify))
            .await
            .expect("connecting to notify-svc");
    eventually("2 dead-lettered events", WAIT, || {
        let mut status = status.clone();
        async move {
            let answer = status
                .get_consumer_status(GetConsumerStatusRequest {})
                .await
                .ok()?
                .into_inner();
            (answer.messages_dead_lettered == 2).then_some(())
        }
    })
    .await;
    let answer = status
        .get_consumer_status(GetConsumerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(answer.group_id.ends_with("-notify"), "{answer:?}");
    eventually("the dead letters on order-paid.dlq", WAIT, || async {
        (stack.published("order-paid.dlq").await >= 2).then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn a_subscriber_receives_its_new_notifications_only() {
    let stack = Stack::start().await;
    stack.set_stock("LIVE-1", 10, 100).await;
    let mut notify = stack.notify.clone();

    let refused = notify
        .subscribe_notifications(SubscribeNotificationsRequest {
            user_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_status("no user", &refused, Code::InvalidArgument, "user_id");

    let mut stream = notify
        .subscribe_notifications(SubscribeNotificationsRequest {
            user_id: "sam".into(),
        })
        .await
        .expect("SubscribeNotifications")
        .into_inner();
    // Another user's notification, stored while sam listens, must not reach sam.
    stack
        .create_order(order_request("t1", "tom", &[("LIVE-1", 1)]))
        .await
        .expect("CreateOrder");
    wait_for_notifications(&stack, "tom", 1).await;
    let order = stack
        .create_order(order_request("s1", "sam", &[("LIVE-1", 3)]))
        .await
        .expect("CreateOrder");

    let received = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a notification on the stream")
        .expect("the stream failed")
        .expect("the stream ended")
        .notification
        .expect("a notification");
    assert_eq!(received.user_id, "sam");
    assert_eq!(received.order_id, order.order_id);
    assert_eq!(
        received.text,
        format!("Order {} placed: 3 items, ¥3.00", order.order_id)
    );
    // The same notification is listed.
    let listed = wait_for_notifications(&stack, "sam", 1).await;
    assert_eq!(listed[0], received);

    // Shutting down ends the stream with UNAVAILABLE, and the server still stops cleanly.
    stack.stop().await;
    let ended = stream.message().await;
    match ended {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("the stream went on after shutdown: {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_misses_nothing_while_the_feed_reconnects() {
    let stack = Stack::start().await;
    stack.set_stock("LIVE-2", 10, 100).await;
    let mut stream = stack
        .notify
        .clone()
        .subscribe_notifications(SubscribeNotificationsRequest {
            user_id: "uma".into(),
        })
        .await
        .expect("SubscribeNotifications")
        .into_inner();
    // Cut every idle listening connection of this test's database (notify-svc's feed among
    // them), then store a notification: announced while the feed reconnects or after, it
    // arrives either way (live, or re-read when the feed is back).
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND (query LIKE 'LISTEN%' OR query = 'SELECT now()')",
    )
    .fetch_one(&stack.db)
    .await
    .expect("terminating the listeners");
    assert!(cut >= 1, "no listening connection found");
    let mut received = Vec::new();
    for (index, key) in ["u1", "u2"].into_iter().enumerate() {
        let order = stack
            .create_order(order_request(key, "uma", &[("LIVE-2", 1)]))
            .await
            .expect("CreateOrder");
        let notification = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("a notification on the stream")
            .expect("the stream failed")
            .expect("the stream ended")
            .notification
            .expect("a notification");
        assert_eq!(
            notification.order_id, order.order_id,
            "notification {index}"
        );
        received.push(notification);
    }
    // Exactly those two, each once.
    let mut listed = wait_for_notifications(&stack, "uma", 2).await;
    listed.reverse();
    assert_eq!(listed, received);
    stack.stop().await;
}

/// One HTTP request as the in-test webhook receiver saw it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    /// Lower-case names.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 receiver on 127.0.0.1: answers the n-th request (0-based) with
/// `status(n)`, records every request, and closes each connection after answering.
struct Receiver {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl Receiver {
    async fn start(status: fn(usize) -> u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let address = listener.local_addr().expect("local address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let _ = read_request(connection, &recorded, status).await;
                });
            }
        });
        Self { address, requests }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/orderflow", self.address)
    }

    fn requests(&self) -> Vec<Captured> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn read_request(
    connection: TcpStream,
    recorded: &Mutex<Vec<Captured>>,
    status: fn(usize) -> u16,
) -> Option<()> {
    let mut reader = BufReader::new(connection);
    let mut line = String::new();
    reader.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    let index = {
        let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
        recorded.push(Captured {
            method,
            path,
            headers,
            body,
        });
        recorded.len() - 1
    };
    let code = status(index);
    let (reason, text) = if (200..300).contains(&code) {
        ("OK", "")
    } else {
        ("Internal Server Error", "try again later")
    };
    let answer = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut connection = reader.into_inner();
    connection.write_all(answer.as_bytes()).await.ok()?;
    connection.shutdown().await.ok()
}

/// (delivery_state, delivery_attempts, last_delivery_error) of the user's only notification.
async fn delivery(stack: &Stack, user_id: &str) -> Option<(String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT delivery_state, delivery_attempts, last_delivery_error FROM notifications \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&stack.db)
    .await
    .ok()?
}

/// notify-svc delivers to `receiver` with a secret, retrying quickly; `webhook_max_attempts`
/// unless `None`.
fn webhook_options(receiver: &Receiver, webhook_max_attempts: Option<u32>) -> Options {
    let url = receiver.url();
    Options {
        notify_config: Configure::new(move |config: &mut notify_svc::Config| {
            let delivery = &mut config.delivery;
            delivery.webhook_url = url.clone();
            delivery.webhook_secret = "s3cret".into();
            delivery.webhook_min_backoff_ms = 100;
            delivery.webhook_max_backoff_ms = 200;
            delivery.delivery_interval_ms = 100;
            if let Some(attempts) = webhook_max_attempts {
                delivery.webhook_max_attempts = attempts;
            }
        }),
        ..Options::default()
    }
}

#[tokio::test]
async fn the_webhook_gets_signed_deliveries_retried_until_accepted() {
    // 500 twice, then 200.
    let receiver = Receiver::start(|n| if n < 2 { 500 } else { 200 }).await;
    let stack = Stack::start_with(webhook_options(&receiver, None)).await;
    stack.set_stock("HOOK-1", 10, 19_900).await;
    let order = stack
        .create_order(order_request("w1", "wendy", &[("HOOK-1", 1)]))
        .await
        .expect("CreateOrder");
    let notification = wait_for_notifications(&stack, "wendy", 1).await.remove(0);

    let (state, attempts, error) = eventually("the delivery", WAIT, || async {
        delivery(&stack, "wendy")
            .await
            .filter(|(state, _, _)| state == "delivered")
    })
    .await;
    assert_eq!((state.as_str(), attempts), ("delivered", 3));
    let error = error.expect("the failed attempts' error is kept");
    assert!(error.contains("HTTP 500"), "{error}");
    let delivered_at_set: bool = sqlx::query_scalar(
        "SELECT delivered_at IS NOT NULL FROM notifications WHERE user_id = 'wendy'",
    )
    .fetch_one(&stack.db)
    .await
    .unwrap();
    assert!(delivered_at_set);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/orderflow");
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing: {request:?}"))
                .as_str()
        };
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(
            header(notify_svc::NOTIFICATION_ID_HEADER),
            notification.notification_id
        );
        let timestamp = header(notify_svc::TIMESTAMP_HEADER);
        let seconds: i64 = timestamp.parse().expect("unix seconds");
        assert!(seconds > 1_700_000_000, "{timestamp}");
        let signature = header(notify_svc::SIGNATURE_HEADER);
        assert!(signature.starts_with("sha256="), "{signature}");
        assert!(notify_svc::signature::verify(
            b"s3cret",
            timestamp,
            &request.body,
            signature
        ));
        assert!(!notify_svc::signature::verify(
            b"wrong",
            timestamp,
            &request.body,
            signature
        ));
        let body = String::from_utf8(request.body.clone()).expect("UTF-8 JSON");
        for (field, value) in [
            ("notification_id", notification.notification_id.as_str()),
            ("user_id", "wendy"),
            ("order_id", order.order_id.as_str()),
            ("event_id", notification.event_id.as_str()),
            ("event_type", "order-created"),
            ("text", notification.text.as_str()),
        ] {
            assert!(
                body.contains(&format!("\"{field}\":\"{value}\"")),
                "{field} in {body}"
            );
        }
        assert!(body.contains("\"created_at\":\""), "{body}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_is_given_up_on() {
    let receiver = Receiver::start(|_| 500).await;
    let stack = Stack::start_with(webhook_options(&receiver, Some(2))).await;
    stack.set_stock("HOOK-2", 10, 100).await;
    stack
        .create_order(order_request("f1", "fred", &[("HOOK-2", 1)]))
        .await
        .expect("CreateOrder");

    let (state, attempts, error) = eventually("the delivery to be given up", WAIT, || async {
        delivery(&stack, "fred")
            .await
            .filter(|(state, _, _)| state == "failed")
    })
    .await;
    assert_eq!((state.as_str(), attempts), ("failed", 2));
    let error = error.expect("the last error is recorded");
    assert!(error.contains("HTTP 500"), "{error}");
    assert!(error.contains("try again later"), "{error}");
    assert_eq!(receiver.requests().len(), 2);
    stack.stop().await;
}

#[tokio::test]
async fn an_https_webhook_is_refused_at_start_up() {
    use clap::Parser;
    let config = notify_svc::Config::parse_from([
        "notify-svc",
        "--webhook-url=https://hooks.example.com/orderflow",
        "--webhook-secret=s3cret",
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let error = notify_svc::run(config, listener, shutdown)
        .await
        .expect_err("an https:// webhook must be refused");
    assert!(
        matches!(error, orderflow_runtime::RuntimeError::Config(_)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("--webhook-url"), "{message}");
    assert!(
        message.contains("https:// is not supported yet"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn events_arriving_together_list_in_the_order_they_happened() {
    // A wide batch window, so the three events land in one batch.
    let stack = Stack::start_with(Options {
        notify_config: Configure::new(|config: &mut notify_svc::Config| {
            config.consumer.batch_max_wait_ms = 1000
        }),
        ..Options::default()
    })
    .await;
    let order_id = uuid::Uuid::now_v7().to_string();
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let snapshot = |status: OrderStatus, version: i64| {
        let mut order = paid_event("hana", &order_id)
            .order
            .expect("the paid event's order");
        order.status = status.into();
        order.version = version;
        order.tracking_number = "YT-9".into();
        order.updated_at = Some(prost_types::Timestamp {
            seconds: i64::try_from(start).unwrap_or_default() + version,
            nanos: 0,
        });
        order
    };
    let paid = OrderPaid {
        order: Some(snapshot(OrderStatus::Paid, 2)),
        ..paid_event("hana", &order_id)
    };
    let shipped = orderflow_proto::events::v1::OrderShipped {
        event_id: uuid::Uuid::now_v7().to_string(),
        order_id: order_id.clone(),
        occurred_at: None,
        order: Some(snapshot(OrderStatus::Shipped, 3)),
        tracking_number: "YT-9".into(),
    };
    let completed = orderflow_proto::events::v1::OrderCompleted {
        event_id: uuid::Uuid::now_v7().to_string(),
        order_id: order_id.clone(),
        occurred_at: None,
        order: Some(snapshot(OrderStatus::Completed, 4)),
    };
    // Published newest first, on three topics at once.
    stack
        .publish_all(&[
            (
                topics::ORDER_COMPLETED,
                order_id.clone(),
                completed.encode_to_vec(),
            ),
            (
                topics::ORDER_SHIPPED,
                order_id.clone(),
                shipped.encode_to_vec(),
            ),
            (topics::ORDER_PAID, order_id.clone(), paid.encode_to_vec()),
        ])
        .await;
    let listed = wait_for_notifications(&stack, "hana", 3).await;
    let kinds: Vec<&str> = listed
        .iter()
        .map(|notification| notification.event_type.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            topics::ORDER_COMPLETED,
            topics::ORDER_SHIPPED,
            topics::ORDER_PAID
        ],
        "newest first, by when it happened"
    );
    stack.stop().await;
}
