//! GetOrder, BatchGetOrders and ListOrders: the cache first, PostgreSQL for what it lacks, and
//! the cache refilled (in the background: the reader already has its answer) with what was
//! read. A cached copy is used only when no change of the order is in flight (see cache.rs),
//! so a read never shows a state older than one acknowledged.

use std::collections::HashMap;

use orderflow_page_token::Cursor;
use orderflow_proto::limits::{DEFAULT_PAGE_SIZE, MAX_BATCH_ORDERS, MAX_ID_LEN, MAX_PAGE_SIZE};
use orderflow_proto::order::v1::Order;
use orderflow_runtime::timestamp;
use orderflow_runtime::validate::{self, FieldError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cache::{Cached, OrderCache};
use crate::error::OrderError;
use crate::store::OrderStore;

#[derive(Clone)]
pub struct Reads {
    pub cache: OrderCache,
    pub store: OrderStore,
}

/// Found orders, in the order asked for, and the ids nobody has.
#[derive(Debug, Default)]
pub struct Batch {
    pub orders: Vec<Order>,
    pub missing: Vec<String>,
}

/// One page of a user's orders and the token of the next (empty on the last page).
#[derive(Debug)]
pub struct Page {
    pub orders: Vec<Order>,
    pub next_page_token: String,
}

impl Reads {
    pub async fn get(&self, order_id: &str) -> Result<Order, OrderError> {
        let id = validate::uuid("order_id", order_id)?;
        self.find(id)
            .await?
            .ok_or_else(|| OrderError::OrderNotFound(order_id.to_owned()))
    }

    pub async fn find(&self, order_id: Uuid) -> Result<Option<Order>, OrderError> {
        Ok(self.find_many(&[order_id]).await?.pop())
    }

    /// Up to [`MAX_BATCH_ORDERS`] ids; repeated ids are answered once.
    pub async fn batch(&self, order_ids: &[String]) -> Result<Batch, OrderError> {
        let mut ids = Vec::with_capacity(order_ids.len());
        for id in validate::uuids("order_ids", order_ids, MAX_BATCH_ORDERS)? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let found = self.find_many(&ids).await?;
        let mut by_id: HashMap<String, Order> = found
            .into_iter()
            .map(|order| (order.order_id.clone(), order))
            .collect();
        let mut batch = Batch::default();
        for id in ids {
            let id = id.to_string();
            match by_id.remove(&id) {
                Some(order) => batch.orders.push(order),
                None => batch.missing.push(id),
            }
        }
        Ok(batch)
    }

    /// The orders found among `order_ids` (distinct): one pipelined cache round trip, and one
    /// PostgreSQL query for whatever the cache could not answer.
    async fn find_many(&self, order_ids: &[Uuid]) -> Result<Vec<Order>, OrderError> {
        let keys: Vec<String> = order_ids.iter().map(Uuid::to_string).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let cached = match self.cache.get_many(&key_refs).await {
            Ok(cached) => cached,
            Err(error) => {
                tracing::warn!(%error, "order cache unreadable; reading PostgreSQL");
                vec![Cached::Missing; order_ids.len()]
            }
        };
        let mut found = Vec::with_capacity(order_ids.len());
        let mut unanswered = Vec::new();
        let mut fallback = HashMap::new();
        for (id, cached) in order_ids.iter().zip(cached) {
            match cached {
                Cached::Fresh(order) => found.push(order),
                Cached::Changing(copy) => {
                    unanswered.push(*id);
                    if let Some(copy) = copy {
                        fallback.insert(copy.order_id.clone(), copy);
                    }
                }
                Cached::Missing => unanswered.push(*id),
            }
        }
        orderflow_telemetry::metrics::metrics().count_cache(found.len(), unanswered.len());
        if unanswered.is_empty() {
            return Ok(found);
        }
        let persisted = self.store.get_many(&unanswered).await?;
        for order in &persisted {
            fallback.remove(&order.order_id);
        }
        self.refill(persisted.clone());
        found.extend(persisted);
        // Not persisted yet, and the change in flight did not commit: the cached copy is it.
        found.extend(fallback.into_values());
        Ok(found)
    }

    fn refill(&self, orders: Vec<Order>) {
        if orders.is_empty() {
            return;
        }
        let cache = self.cache.clone();
        tokio::spawn(async move {
            for order in orders {
                if let Err(error) = cache.put_if_newer(&order).await {
                    tracing::warn!(%error, order_id = %order.order_id, "could not refill the order cache");
                    return;
                }
            }
        });
    }

    /// One user's orders, newest first, from PostgreSQL (an order appears once consumer-worker
    /// or its first status change persisted it).
    pub async fn list(
        &self,
        user_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page, OrderError> {
        validate::identifier("user_id", user_id, MAX_ID_LEN)?;
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                return Err(FieldError::new(
                    "page_size",
                    format!("must not be negative, got {size}"),
                )
                .into())
            }
            size => size.min(MAX_PAGE_SIZE),
        };
        let cursor = if page_token.is_empty() {
            None
        } else {
            Some(orderflow_page_token::decode(page_token).ok_or(OrderError::BadPageToken)?)
        };
        // One more than asked tells whether another page follows.
        let mut orders = self
            .store
            .page(user_id, cursor, i64::from(size) + 1)
            .await?;
        let next_page_token = if orders.len() > size as usize {
            orders.truncate(size as usize);
            orders.last().map(token_after).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            orders,
            next_page_token,
        })
    }
}

/// The token of the page after `order`, the last of its page (orderflow_page_token).
fn token_after(order: &Order) -> String {
    orderflow_page_token::encode(Cursor {
        created_at: order
            .created_at
            .as_ref()
            .and_then(timestamp::from_proto)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        id: Uuid::try_parse(&order.order_id).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_is_the_position_of_the_last_order() {
        let at = timestamp::now();
        let order = Order {
            order_id: Uuid::now_v7().to_string(),
            created_at: Some(timestamp::to_proto(at)),
            ..Order::default()
        };
        let cursor = orderflow_page_token::decode(&token_after(&order)).expect("a valid token");
        assert_eq!(cursor.created_at, at);
        assert_eq!(cursor.id.to_string(), order.order_id);
    }
}
