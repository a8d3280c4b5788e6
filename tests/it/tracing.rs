//! One trace follows an order through every process: the four services run as real processes
//! exporting OTLP to a receiver in the test, and the caller's own W3C trace context comes back
//! from each of them: CreateOrder → inventory-svc → Redis → PostgreSQL → Kafka →
//! consumer-worker → PostgreSQL → notify-svc; and a PayOrder's trace continues through the
//! outbox relay to the consumers.

use std::collections::BTreeSet;
use std::time::Duration;

use orderflow_proto::order::v1::PayOrderRequest;
use orderflow_tests::otlp::{OtlpReceiver, ReceivedSpan, CLIENT, CONSUMER, PRODUCER, SERVER};
use orderflow_tests::stack::{Options, Stack};
use orderflow_tests::{eventually, order_request};
use tonic::metadata::MetadataValue;

/// A request carrying the caller's trace context, as an instrumented client sends it.
fn traced<T>(message: T, trace_id: &str, parent_span_id: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let traceparent = format!("00-{trace_id}-{parent_span_id}-01");
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(traceparent.as_str()).expect("an ASCII traceparent"),
    );
    request
}

/// What one hop of the trace must show: a description, the service, and a test of its span.
type Hop<'a> = (&'a str, &'a str, Box<dyn Fn(&ReceivedSpan) -> bool + 'a>);

fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..bytes * 2].to_owned()
}

fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    matches: impl Fn(&ReceivedSpan) -> bool,
) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|span| span.service == service && matches(span))
}

fn describe(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|span| format!("{}: {} (kind {})", span.service, span.name, span.kind))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[tokio::test]
async fn one_trace_spans_every_hop_of_an_order() {
    let receiver = OtlpReceiver::start().await;
    let stack = Stack::start_with(Options {
        processes: Some(vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                receiver.endpoint.clone(),
            ),
            // Export within a tenth of a second instead of the default five.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]),
        ..Options::default()
    })
    .await;
    stack.set_stock("TRACE-1", 10, 250).await;

    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let order = stack
        .order
        .clone()
        .create_order(traced(
            order_request("traced", "tracy", &[("TRACE-1", 2)]),
            &trace_id,
            &caller_span,
        ))
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("an order");

    let hops: [Hop; 10] = [
        (
            "the CreateOrder server span, a child of the caller's",
            "order-api",
            Box::new(|span| {
                span.kind == SERVER
                    && span.name == "orderflow.order.v1.OrderService/CreateOrder"
                    && span.parent_span_id == caller_span
                    && span.attribute("rpc.system") == Some("grpc")
            }),
        ),
        (
            "order-api's client call to Reserve",
            "order-api",
            Box::new(|span| {
                span.kind == CLIENT
                    && span.name == "orderflow.inventory.v1.InventoryService/Reserve"
            }),
        ),
        (
            "order-api's Redis commands (idempotency claim, cache)",
            "order-api",
            Box::new(|span| span.attribute("db.system.name") == Some("redis")),
        ),
        (
            "the publish of order-created",
            "order-api",
            Box::new(|span| {
                span.kind == PRODUCER
                    && span.attribute("messaging.system") == Some("kafka")
                    && span
                        .attribute("messaging.destination.name")
                        .is_some_and(|topic| topic.ends_with("order-created"))
            }),
        ),
        (
            "the Reserve server span",
            "inventory-svc",
            Box::new(|span| {
                span.kind == SERVER
                    && span.name == "orderflow.inventory.v1.InventoryService/Reserve"
            }),
        ),
        (
            "the admission script in Redis",
            "inventory-svc",
            Box::new(|span| {
                span.attribute("db.system.name") == Some("redis")
                    && span
                        .attribute("db.operation.name")
                        .is_some_and(|operation| operation.starts_with("EVAL"))
            }),
        ),
        (
            "the reservation recorded in PostgreSQL",
            "inventory-svc",
            Box::new(|span| {
                span.attribute("db.system.name") == Some("postgresql")
                    && span.name == "INSERT reservations"
            }),
        ),
        (
            "consumer-worker processing order-created",
            "consumer-worker",
            Box::new(|span| {
                span.kind == CONSUMER
                    && span.attribute("messaging.operation.type") == Some("process")
            }),
        ),
        (
            "consumer-worker's PostgreSQL transaction",
            "consumer-worker",
            Box::new(|span| span.attribute("db.system.name") == Some("postgresql")),
        ),
        (
            "notify-svc storing the notification",
            "notify-svc",
            Box::new(|span| {
                span.attribute("db.system.name") == Some("postgresql")
                    && span.name == "INSERT notifications"
            }),
        ),
    ];
    // Spans arrive as each process exports them; on a timeout the check below says what is
    // missing and lists what did arrive.
    let complete = |trace: &[ReceivedSpan]| {
        hops.iter()
            .all(|(_, service, matches)| find(trace, service, matches).is_some())
    };
    let waiting_until = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut trace = receiver.trace(&trace_id);
    while !complete(&trace) && tokio::time::Instant::now() < waiting_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trace = receiver.trace(&trace_id);
    }
    for (what, service, matches) in &hops {
        assert!(
            find(&trace, service, matches).is_some(),
            "{what} ({service}) is in the trace; it holds:\n  {}\nall spans received:\n  {}",
            describe(&trace),
            describe(&receiver.spans())
        );
    }
    // The hops are linked, not just tagged: inventory-svc's server span is the child of
    // order-api's client span, and the consumers' of the producer's.
    let span_of = |service: &str, kind: i32| {
        find(&trace, service, |span| span.kind == kind)
            .unwrap_or_else(|| panic!("a kind {kind} span of {service}"))
    };
    let reserve_client = find(&trace, "order-api", |span| {
        span.kind == CLIENT && span.attribute("rpc.system") == Some("grpc")
    })
    .expect("the client call to Reserve");
    assert_eq!(
        span_of("inventory-svc", SERVER).parent_span_id,
        reserve_client.span_id
    );
    let producer = span_of("order-api", PRODUCER);
    assert_eq!(
        span_of("consumer-worker", CONSUMER).parent_span_id,
        producer.span_id
    );
    assert_eq!(
        span_of("notify-svc", CONSUMER).parent_span_id,
        producer.span_id
    );

    // A status change publishes later, from the outbox; its event still carries its trace.
    let (pay_trace, pay_caller) = (random_hex(16), random_hex(8));
    stack
        .order
        .clone()
        .pay_order(traced(
            PayOrderRequest {
                order_id: order.order_id.clone(),
                payment_id: "pay-traced".into(),
                amount_cents: order.total_cents,
            },
            &pay_trace,
            &pay_caller,
        ))
        .await
        .expect("PayOrder");
    let paid = eventually(
        "the payment's event processed in the payment's trace",
        Duration::from_secs(60),
        || async {
            let trace = receiver.trace(&pay_trace);
            let published = find(&trace, "order-api", |span| {
                span.kind == PRODUCER
                    && span
                        .attribute("messaging.destination.name")
                        .is_some_and(|topic| topic.ends_with("order-paid"))
            })
            .is_some();
            let consumed = ["consumer-worker", "notify-svc"]
                .iter()
                .all(|service| find(&trace, service, |span| span.kind == CONSUMER).is_some());
            (published && consumed).then_some(trace)
        },
    )
    .await;
    assert!(
        find(&paid, "order-api", |span| span.kind == SERVER
            && span.name == "orderflow.order.v1.OrderService/PayOrder")
        .is_some(),
        "PayOrder's server span is in its trace:\n  {}",
        describe(&paid)
    );
    stack.stop().await;
}
