//! Throughput of the event plumbing on the local stack; run it with `scripts/bench`.
//!
//! Measures, in one run and on one machine: a raw idempotent producer sending pre-encoded
//! records (the ceiling: no database), outbox appends, the relay (outbox to Kafka) and the
//! idempotent consumer runner (Kafka to Postgres, one dedup row plus one state row per
//! event), and prints each as events/s and as a ratio to the raw producer.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use shared_events::{OutboxRelay, RelayConfig, Topic};
use support::{TestStack, step_event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ORDERS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events_total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000);
    let stack = TestStack::new(6).await;
    let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    let events: Vec<_> = (0..events_total)
        .map(|i| step_event(orders[i % ORDERS], i / ORDERS))
        .collect();
    println!(
        "orderflow plumbing benchmark: {events_total} events over {ORDERS} orders, 6 partitions, {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // 1. The ceiling: the same records, already encoded, straight to Kafka.
    let mut encoded = Vec::with_capacity(events.len());
    for event in &events {
        encoded.push((event.key(), stack.codec.encode(event).await?));
    }
    let producer: FutureProducer = stack.kafka.idempotent_producer().create()?;
    let baseline_topic = stack.names.name(Topic::Shipments);
    let started = Instant::now();
    let deliveries: Vec<_> = encoded
        .iter()
        .map(|(key, bytes)| {
            producer
                .send_result(FutureRecord::to(&baseline_topic).key(key).payload(bytes))
                .map_err(|(e, _)| e)
        })
        .collect::<Result<_, _>>()?;
    for delivery in deliveries {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    let raw = started.elapsed();

    // 2. Appending to the outbox, 100 events per transaction.
    let started = Instant::now();
    for chunk in events.chunks(100) {
        stack.append_committed(chunk).await;
    }
    let append = started.elapsed();

    // 3. The relay, from start to an empty outbox.
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(
        stack.pool.clone(),
        &stack.outbox,
        &stack.kafka,
        RelayConfig::default(),
        TestStack::fast_retry(),
        stack.metrics.clone(),
    )?;
    let started = Instant::now();
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    while stack.outbox_len().await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relayed = started.elapsed();

    // 4. The idempotent consumer, from start (including joining the group) to the last effect.
    let started = Instant::now();
    let consumer = stack.spawn_consumer("bench", &shutdown);
    loop {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM test_effects")
            .fetch_one(&stack.pool)
            .await?;
        if applied as usize >= events_total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumed = started.elapsed();
    shutdown.cancel();
    relay_task.await??;
    consumer.await?;

    let rate = |elapsed: Duration| events_total as f64 / elapsed.as_secs_f64();
    let row = |name: &str, elapsed: Duration| {
        println!(
            "  {name:<46} {:>9.0} events/s  {:>6.2}x raw  ({:.2} s)",
            rate(elapsed),
            rate(elapsed) / rate(raw),
            elapsed.as_secs_f64()
        );
    };
    row("raw idempotent producer (ceiling, no DB)", raw);
    row("outbox append (100 events per transaction)", append);
    row("outbox relay (Postgres -> Kafka, acked)", relayed);
    row("idempotent consumer (Kafka -> Postgres, dedup)", consumed);
    Ok(())
}
