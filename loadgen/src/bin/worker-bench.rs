//! worker-bench: how many events per second consumer-worker applies to PostgreSQL, with
//! batching on and off. Publishes `--orders` placed-and-paid orders (two events each) to fresh
//! topics first, then runs the worker (in-process, the same `run` as the binary) on a fresh
//! database per setting, timing from start until every event is recorded applied.
//! `scripts/bench-worker.sh` (`make bench-worker`) runs it in release mode.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use orderflow_proto::events::v1::{OrderCreated, OrderPaid};
use orderflow_proto::order::v1::{Order, OrderItem, OrderStatus};
use orderflow_proto::topics;
use orderflow_runtime::timestamp;
use prost::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "worker-bench",
    about = "consumer-worker events/s, batch on vs off"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// PostgreSQL server URL without a database; each run gets a database of its own.
    #[arg(long, default_value = "postgres://orderflow:orderflow@127.0.0.1:5432")]
    postgres: String,
    /// Orders to publish; each is an `order-created` and an `order-paid` event.
    #[arg(long, default_value_t = 10_000)]
    orders: usize,
    /// The batch sizes to measure, in order (1 = batching off).
    #[arg(long, value_delimiter = ',', default_value = "256,1")]
    batch_sizes: Vec<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run = orderflow_tests::unique_id();
    let prefix = format!("wbench{run}.");
    let order_ids: Vec<Uuid> = (0..args.orders).map(|_| Uuid::now_v7()).collect();
    publish(&args, &prefix, &order_ids).await?;
    let events = 2 * order_ids.len();
    println!(
        "worker-bench: {} events ({} orders × created + paid) on {} partitions per topic",
        events, args.orders, 3
    );
    for (index, batch) in args.batch_sizes.iter().enumerate() {
        let (url, db) =
            orderflow_tests::deps::fresh_database_on(&args.postgres, &format!("{run}b{index}"))
                .await;
        // Every order holds stock, as every order the API publishes does.
        sqlx::query(
            "INSERT INTO reservations (order_id, state, expires_at) \
             SELECT id, 'committed', now() + interval '1 hour' FROM UNNEST($1::uuid[]) AS id",
        )
        .bind(&order_ids)
        .execute(&db)
        .await
        .context("inserting the reservations")?;
        let config = <consumer_worker::Config as Parser>::parse_from([
            "consumer-worker".to_owned(),
            format!("--database-url={url}"),
            format!("--kafka-brokers={}", args.kafka_brokers),
            format!("--kafka-topic-prefix={prefix}"),
            format!("--group-id={prefix}worker{index}"),
            format!("--batch-max-messages={batch}"),
            "--log=warn".to_owned(),
        ]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let worker = tokio::spawn(consumer_worker::run(config, listener, shutdown.clone()));
        let mut first_applied = None;
        loop {
            let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
                .fetch_one(&db)
                .await?;
            let applied = usize::try_from(applied).unwrap_or_default();
            if applied > 0 && first_applied.is_none() {
                first_applied = Some((Instant::now(), applied));
            }
            if applied >= events {
                break;
            }
            anyhow::ensure!(!worker.is_finished(), "the worker stopped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        shutdown.cancel();
        worker.await??;
        let (first_at, first_count) = first_applied.unwrap_or((started, 0));
        let applying = first_at.elapsed();
        #[allow(clippy::cast_precision_loss)]
        let rate = (events - first_count) as f64 / applying.as_secs_f64();
        println!(
            "batch-max-messages {batch:>4}: {rate:>6.0} events/s while applying \
             ({events} events, {:.2} s in all of which {:.2} s joining the group and fetching \
             the first batch)",
            elapsed.as_secs_f64(),
            (elapsed - applying).as_secs_f64()
        );
    }
    Ok(())
}

async fn publish(args: &Args, prefix: &str, order_ids: &[Uuid]) -> anyhow::Result<()> {
    let kafka = orderflow_kafka::KafkaArgs {
        kafka_brokers: args.kafka_brokers.clone(),
        kafka_topic_prefix: prefix.to_owned(),
        kafka_topic_partitions: 3,
        kafka_topic_replication: 1,
        kafka_linger_ms: 5,
        kafka_ack_timeout_ms: 30_000,
        kafka_properties: Vec::new(),
        kafka_sasl_password_file: None,
    };
    let names: Vec<String> = topics::ALL.iter().map(|topic| kafka.topic(topic)).collect();
    orderflow_kafka::client::ensure_topics(&kafka, &names).await?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("linger.ms", "5")
        .create()?;
    let now = Some(timestamp::to_proto(timestamp::now()));
    let mut messages = Vec::with_capacity(2 * order_ids.len());
    for id in order_ids {
        let mut order = Order {
            order_id: id.to_string(),
            user_id: format!("user-{}", id.simple()),
            items: vec![OrderItem {
                sku: "BENCH".into(),
                quantity: 1,
                unit_price_cents: 100,
            }],
            total_cents: 100,
            currency: "CNY".into(),
            status: OrderStatus::Pending.into(),
            created_at: now,
            updated_at: now,
            version: 1,
            ..Order::default()
        };
        let created = OrderCreated {
            event_id: Uuid::now_v7().to_string(),
            order_id: id.to_string(),
            occurred_at: now,
            order: Some(order.clone()),
            idempotency_key: id.to_string(),
        };
        order.status = OrderStatus::Paid.into();
        order.version = 2;
        order.payment_id = "pay".into();
        let paid = OrderPaid {
            event_id: Uuid::now_v7().to_string(),
            order_id: id.to_string(),
            occurred_at: now,
            order: Some(order),
            payment_id: "pay".into(),
            amount_cents: 100,
        };
        messages.push((
            kafka.topic(topics::ORDER_CREATED),
            id.to_string(),
            created.encode_to_vec(),
        ));
        messages.push((
            kafka.topic(topics::ORDER_PAID),
            id.to_string(),
            paid.encode_to_vec(),
        ));
    }
    for chunk in messages.chunks(5_000) {
        let sends = chunk.iter().map(|(topic, key, payload)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(error, _)| error).context("publishing")?;
        }
    }
    Ok(())
}
