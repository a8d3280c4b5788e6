//! The operations of each scenario: which one comes next (synchronous, so the open-loop
//! scheduler never waits for it) and running it, recording its answer twice: in the report's
//! statistics and in the ledger the verification checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orderflow_proto::order::v1::{
    BatchGetOrdersRequest, CancelOrderRequest, CompleteOrderRequest, CreateOrderRequest,
    GetOrderRequest, Order, OrderLine, OrderStatus, PayOrderRequest, ShipOrderRequest,
};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use uuid::Uuid;

use super::args::Kind;
use super::client::Pool;
use super::drive::Rng;
use super::record::{is_ambiguous, Ledger, Placed, Recorder, Rpc, Seen};

/// What every order workload shares.
pub struct Orders {
    pub pool: Arc<Pool>,
    pub ledger: Arc<Ledger>,
    /// Prefix of every key, user and SKU of this run, so runs never collide.
    pub run: String,
    /// Every order placed as this user, else one user per buyer.
    pub user: Option<String>,
    pub timeout: Duration,
    /// Send a CreateOrder that failed ambiguously again, with the same key, until it is
    /// answered or this long passed since the first attempt (`--retry-same-key`).
    pub retry_for: Option<Duration>,
}

/// The pause before the first retry of a key; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(20);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn lines(items: &[(String, i64)]) -> Vec<OrderLine> {
    items
        .iter()
        .map(|(sku, quantity)| OrderLine {
            sku: sku.clone(),
            quantity: *quantity,
        })
        .collect()
}

/// The version and status an answer shows, recorded for `order_id`.
fn seen(order: &Order) -> Seen {
    Seen::State {
        version: order.version,
        status: order.status(),
    }
}

impl Orders {
    /// One CreateOrder; the order if it was acknowledged.
    async fn create(
        &self,
        idempotency_key: String,
        user_id: String,
        items: Vec<(String, i64)>,
        scheduled: Instant,
        recorder: &Recorder,
    ) -> Option<Placed> {
        let message = CreateOrderRequest {
            idempotency_key: idempotency_key.clone(),
            user_id: user_id.clone(),
            items: lines(&items),
        };
        let sent = Instant::now();
        let mut pause = FIRST_RETRY_PAUSE;
        let result = loop {
            // The next connection each time: a retry goes to another order-api if there are
            // several, as a load balancer would send it.
            let result = self
                .pool
                .buyer()
                .create_order(request(message.clone(), self.timeout))
                .await
                .map(|answer| answer.into_inner().order);
            match (&result, self.retry_for) {
                (Err(status), Some(budget))
                    if is_ambiguous(status.code()) && sent.elapsed() < budget =>
                {
                    recorder.retried(status);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                _ => break result,
            }
        };
        recorder.record(Rpc::CreateOrder, scheduled, &result);
        let order = match result {
            Ok(Some(order)) => order,
            Ok(None) => {
                self.ledger
                    .violation(format!("CreateOrder {idempotency_key} answered no order"));
                return None;
            }
            Err(status) => {
                if is_ambiguous(status.code()) {
                    self.ledger.unsure_create(idempotency_key);
                }
                return None;
            }
        };
        let Ok(order_id) = Uuid::parse_str(&order.order_id) else {
            self.ledger.violation(format!(
                "CreateOrder {idempotency_key} answered order id {:?}, not a UUID",
                order.order_id
            ));
            return None;
        };
        if order.status() != OrderStatus::Pending && order.version == 1 {
            self.ledger.violation(format!(
                "CreateOrder {idempotency_key} answered a new order in {:?}",
                order.status()
            ));
        }
        let placed = Placed {
            order_id,
            user_id,
            idempotency_key,
            items,
            total_cents: order.total_cents,
        };
        self.ledger
            .placed(placed.clone(), sent, order.version, order.status());
        Some(placed)
    }

    fn user_for(&self, name: impl FnOnce() -> String) -> String {
        self.user.clone().unwrap_or_else(name)
    }
}

/// A placed order the mixed workload may act on next.
#[derive(Debug, Clone, Copy)]
pub struct OrderRef {
    pub id: Uuid,
    pub total_cents: i64,
}

#[derive(Debug)]
pub enum Op {
    Buy(u64),
    Create {
        skus: Vec<usize>,
        quantity: i64,
        user: u64,
    },
    Pay(OrderRef),
    Cancel(OrderRef),
    Ship(OrderRef),
    Complete(OrderRef),
    Get(Uuid),
    BatchGet(Vec<Uuid>),
    Health,
}

/// `buyers` buyers (numbered from `first`) each asking for one unit of `sku`.
pub struct FlashSale {
    pub orders: Orders,
    pub sku: String,
    pub next: AtomicU64,
    pub end: u64,
}

/// Many SKUs, orders moving through their lifecycle, reads of what was placed.
pub struct Mixed {
    pub orders: Orders,
    pub skus: Vec<String>,
    pub weights: Vec<(Kind, u32)>,
    pub users: u64,
    pub max_lines: usize,
    pub batch_size: usize,
    pub repeat_percent: u32,
    keys: AtomicU64,
    /// Orders still to place before the mix starts (see [`Mixed::preload`]).
    preloading: AtomicU64,
    pending: Mutex<Vec<OrderRef>>,
    paid: Mutex<Vec<OrderRef>>,
    shipped: Mutex<Vec<OrderRef>>,
    known: Mutex<Vec<Uuid>>,
}

pub struct Noop {
    pub clients: Vec<HealthClient<Channel>>,
    pub next: AtomicU64,
    pub timeout: Duration,
}

pub enum Workload {
    FlashSale(FlashSale),
    Mixed(Mixed),
    Noop(Noop),
}

fn take_random(pool: &Mutex<Vec<OrderRef>>, rng: &mut Rng) -> Option<OrderRef> {
    let mut pool = pool.lock().unwrap_or_else(PoisonError::into_inner);
    if pool.is_empty() {
        return None;
    }
    let index = rng.below(pool.len() as u64) as usize;
    Some(pool.swap_remove(index))
}

fn put(pool: &Mutex<Vec<OrderRef>>, order: OrderRef) {
    pool.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(order);
}

impl Workload {
    /// The next operation, or `None` once there is nothing more to do.
    pub fn next(&self, rng: &mut Rng) -> Option<Op> {
        match self {
            Self::FlashSale(sale) => {
                let buyer = sale.next.fetch_add(1, Ordering::Relaxed);
                (buyer < sale.end).then_some(Op::Buy(buyer))
            }
            Self::Mixed(mixed) => mixed.next(rng),
            Self::Noop(_) => Some(Op::Health),
        }
    }

    pub async fn run(&self, op: Op, scheduled: Instant, recorder: &Recorder) {
        match (self, op) {
            (Self::FlashSale(sale), Op::Buy(buyer)) => {
                let key = format!("{}-b{buyer}", sale.orders.run);
                let user = sale.orders.user_for(|| key.clone());
                let items = vec![(sale.sku.clone(), 1)];
                sale.orders
                    .create(key, user, items, scheduled, recorder)
                    .await;
            }
            (Self::Mixed(mixed), op) => mixed.run(op, scheduled, recorder).await,
            (Self::Noop(noop), _) => {
                let index = noop.next.fetch_add(1, Ordering::Relaxed) as usize;
                let mut client = noop.clients[index % noop.clients.len()].clone();
                let result = client
                    .check(request(HealthCheckRequest::default(), noop.timeout))
                    .await;
                recorder.record(Rpc::HealthCheck, scheduled, &result);
            }
            (Self::FlashSale(_), _) => {}
        }
    }
}

impl Mixed {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        orders: Orders,
        skus: Vec<String>,
        weights: Vec<(Kind, u32)>,
        users: u64,
        max_lines: usize,
        batch_size: usize,
        repeat_percent: u32,
    ) -> Self {
        Self {
            orders,
            skus,
            weights,
            users: users.max(1),
            max_lines: max_lines.max(1),
            batch_size: batch_size.max(1),
            repeat_percent,
            keys: AtomicU64::new(0),
            preloading: AtomicU64::new(0),
            pending: Mutex::default(),
            paid: Mutex::default(),
            shipped: Mutex::default(),
            known: Mutex::default(),
        }
    }

    fn kind(&self, rng: &mut Rng) -> Kind {
        let total: u32 = self.weights.iter().map(|(_, weight)| weight).sum();
        let mut pick = rng.below(u64::from(total)) as u32;
        for (kind, weight) in &self.weights {
            if pick < *weight {
                return *kind;
            }
            pick -= weight;
        }
        Kind::Create
    }

    /// Until [`Mixed::start_mix`], `next` places `orders` orders and then reports the end.
    pub fn preload(&self, orders: u64) {
        self.preloading
            .store(orders.saturating_add(1), Ordering::Relaxed);
    }

    pub fn start_mix(&self) {
        self.preloading.store(0, Ordering::Relaxed);
    }

    fn next(&self, rng: &mut Rng) -> Option<Op> {
        // 0: mixing; 1: preload done; n > 1: n - 1 orders still to preload.
        let preloading =
            self.preloading
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    (left > 1).then(|| left - 1)
                });
        match preloading {
            Ok(_) => return Some(self.create_op(rng)),
            Err(1) => return None,
            Err(_) => {}
        }
        let op = match self.kind(rng) {
            Kind::Create => None,
            Kind::Pay => take_random(&self.pending, rng).map(Op::Pay),
            Kind::Cancel => take_random(&self.pending, rng).map(Op::Cancel),
            Kind::Ship => take_random(&self.paid, rng).map(Op::Ship),
            Kind::Complete => take_random(&self.shipped, rng).map(Op::Complete),
            Kind::Get => {
                let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                (!known.is_empty()).then(|| Op::Get(known[rng.below(known.len() as u64) as usize]))
            }
            Kind::BatchGet => {
                let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
                (!known.is_empty()).then(|| {
                    // A window of distinct ids at a random place.
                    let size = self.batch_size.min(known.len());
                    let start = rng.below((known.len() - size + 1) as u64) as usize;
                    Op::BatchGet(known[start..start + size].to_vec())
                })
            }
        };
        Some(op.unwrap_or_else(|| self.create_op(rng)))
    }

    fn create_op(&self, rng: &mut Rng) -> Op {
        let count = 1 + rng.below(self.max_lines as u64) as usize;
        let mut skus: Vec<usize> = (0..count)
            .map(|_| rng.below(self.skus.len() as u64) as usize)
            .collect();
        // A SKU may appear once per order.
        skus.sort_unstable();
        skus.dedup();
        Op::Create {
            skus,
            quantity: 1 + rng.below(2) as i64,
            user: rng.below(self.users),
        }
    }

    async fn run(&self, op: Op, scheduled: Instant, recorder: &Recorder) {
        let orders = &self.orders;
        match op {
            Op::Create {
                skus,
                quantity,
                user,
            } => {
                let number = self.keys.fetch_add(1, Ordering::Relaxed);
                let key = format!("{}-k{number}", orders.run);
                let user = orders.user_for(|| format!("{}-u{user}", orders.run));
                let items: Vec<(String, i64)> = skus
                    .iter()
                    .map(|index| (self.skus[*index].clone(), quantity))
                    .collect();
                let Some(placed) = orders
                    .create(
                        key.clone(),
                        user.clone(),
                        items.clone(),
                        scheduled,
                        recorder,
                    )
                    .await
                else {
                    return;
                };
                if self.repeats(placed.order_id) {
                    orders
                        .create(key, user, items, Instant::now(), recorder)
                        .await;
                }
                put(
                    &self.pending,
                    OrderRef {
                        id: placed.order_id,
                        total_cents: placed.total_cents,
                    },
                );
                self.known
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(placed.order_id);
            }
            Op::Pay(order) => {
                if self.change(Change::Pay, order, scheduled, recorder).await {
                    put(&self.paid, order);
                }
            }
            Op::Cancel(order) => {
                self.change(Change::Cancel, order, scheduled, recorder)
                    .await;
            }
            Op::Ship(order) => {
                if self.change(Change::Ship, order, scheduled, recorder).await {
                    put(&self.shipped, order);
                }
            }
            Op::Complete(order) => {
                self.change(Change::Complete, order, scheduled, recorder)
                    .await;
            }
            Op::Get(order_id) => {
                let sent = Instant::now();
                let message = GetOrderRequest {
                    order_id: order_id.to_string(),
                };
                let result = orders
                    .pool
                    .buyer()
                    .get_order(request(message, orders.timeout))
                    .await
                    .map(|answer| answer.into_inner().order);
                recorder.record(Rpc::GetOrder, scheduled, &result);
                match result {
                    Ok(Some(order)) => orders.ledger.observe(order_id, sent, seen(&order)),
                    Ok(None) => orders
                        .ledger
                        .violation(format!("GetOrder {order_id} answered no order")),
                    Err(status) if status.code() == Code::NotFound => orders.ledger.violation(
                        format!("GetOrder did not find acknowledged order {order_id}"),
                    ),
                    Err(_) => {}
                }
            }
            Op::BatchGet(order_ids) => {
                let sent = Instant::now();
                let message = BatchGetOrdersRequest {
                    order_ids: order_ids.iter().map(Uuid::to_string).collect(),
                };
                let result = orders
                    .pool
                    .buyer()
                    .batch_get_orders(request(message, orders.timeout))
                    .await
                    .map(tonic::Response::into_inner);
                recorder.record(Rpc::BatchGetOrders, scheduled, &result);
                let Ok(answer) = result else {
                    return;
                };
                for missing in &answer.missing_order_ids {
                    orders.ledger.violation(format!(
                        "BatchGetOrders did not find acknowledged order {missing}"
                    ));
                }
                for order in &answer.orders {
                    match Uuid::parse_str(&order.order_id) {
                        Ok(order_id) => orders.ledger.observe(order_id, sent, seen(order)),
                        Err(_) => orders.ledger.violation(format!(
                            "BatchGetOrders answered order id {:?}, not a UUID",
                            order.order_id
                        )),
                    }
                }
                if answer.orders.len() + answer.missing_order_ids.len() != order_ids.len() {
                    orders.ledger.violation(format!(
                        "BatchGetOrders of {} distinct ids answered {} orders and {} missing",
                        order_ids.len(),
                        answer.orders.len(),
                        answer.missing_order_ids.len()
                    ));
                }
            }
            Op::Buy(_) | Op::Health => {}
        }
    }

    fn repeats(&self, order_id: Uuid) -> bool {
        // Derived from the id, so the choice needs no shared random state.
        (order_id.as_u128() % 100) < u128::from(self.repeat_percent)
    }

    /// One status change (and, sometimes, its repeat); whether it was acknowledged.
    async fn change(
        &self,
        change: Change,
        order: OrderRef,
        scheduled: Instant,
        recorder: &Recorder,
    ) -> bool {
        let first = self.send_change(change, order, scheduled, recorder).await;
        let Some(version) = first else {
            return false;
        };
        if self.repeats(order.id) {
            // The same request again is a no-op success answering the same version.
            let again = self
                .send_change(change, order, Instant::now(), recorder)
                .await;
            match again {
                Some(repeated) if repeated != version => self.orders.ledger.violation(format!(
                    "{} of order {} repeated answered version {repeated}, first {version}",
                    change.rpc().name(),
                    order.id
                )),
                _ => {}
            }
        }
        true
    }

    /// Sends one status change; the answered version if it was acknowledged.
    async fn send_change(
        &self,
        change: Change,
        order: OrderRef,
        scheduled: Instant,
        recorder: &Recorder,
    ) -> Option<i64> {
        let orders = &self.orders;
        let order_id = order.id.to_string();
        let sent = Instant::now();
        let timeout = orders.timeout;
        let result = match change {
            Change::Pay => {
                let message = PayOrderRequest {
                    payment_id: format!("{}-pay-{order_id}", orders.run),
                    order_id,
                    amount_cents: order.total_cents,
                };
                orders
                    .pool
                    .buyer()
                    .pay_order(request(message, timeout))
                    .await
                    .map(|answer| answer.into_inner().order)
            }
            Change::Cancel => {
                let message = CancelOrderRequest {
                    order_id,
                    reason: "loadgen".into(),
                };
                orders
                    .pool
                    .buyer()
                    .cancel_order(request(message, timeout))
                    .await
                    .map(|answer| answer.into_inner().order)
            }
            Change::Ship => {
                let message = ShipOrderRequest {
                    tracking_number: format!("{}-ship-{order_id}", orders.run),
                    order_id,
                };
                orders
                    .pool
                    .operator()
                    .ship_order(request(message, timeout))
                    .await
                    .map(|answer| answer.into_inner().order)
            }
            Change::Complete => {
                let message = CompleteOrderRequest { order_id };
                orders
                    .pool
                    .operator()
                    .complete_order(request(message, timeout))
                    .await
                    .map(|answer| answer.into_inner().order)
            }
        };
        recorder.record(change.rpc(), scheduled, &result);
        match result {
            Ok(Some(answered)) => {
                orders.ledger.observe(order.id, sent, seen(&answered));
                if answered.status() != change.target() {
                    orders.ledger.violation(format!(
                        "{} of order {} answered OK with status {:?}",
                        change.rpc().name(),
                        order.id,
                        answered.status()
                    ));
                }
                Some(answered.version)
            }
            Ok(None) => {
                orders.ledger.violation(format!(
                    "{} of order {} answered no order",
                    change.rpc().name(),
                    order.id
                ));
                None
            }
            Err(status) => {
                if is_ambiguous(status.code()) {
                    let seen = Seen::Unsure {
                        target: change.target(),
                    };
                    orders.ledger.observe(order.id, sent, seen);
                }
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Pay,
    Cancel,
    Ship,
    Complete,
}

impl Change {
    fn rpc(self) -> Rpc {
        match self {
            Self::Pay => Rpc::PayOrder,
            Self::Cancel => Rpc::CancelOrder,
            Self::Ship => Rpc::ShipOrder,
            Self::Complete => Rpc::CompleteOrder,
        }
    }

    fn target(self) -> OrderStatus {
        match self {
            Self::Pay => OrderStatus::Paid,
            Self::Cancel => OrderStatus::Cancelled,
            Self::Ship => OrderStatus::Shipped,
            Self::Complete => OrderStatus::Completed,
        }
    }
}
