//! Size limits that are part of the contract: every service enforces them and answers
//! `INVALID_ARGUMENT` naming the field when a request exceeds one.

/// Most distinct SKUs in one order (and one reservation).
pub const MAX_ITEMS_PER_ORDER: usize = 100;
/// Most units of one SKU in one order.
pub const MAX_QUANTITY_PER_ITEM: i64 = 10_000;
/// Longest user id, idempotency key or payment/tracking reference, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest SKU, in bytes.
pub const MAX_SKU_LEN: usize = 64;
/// Most units an operator may put on sale for one SKU.
pub const MAX_STOCK_QUANTITY: i64 = 1_000_000_000;
/// Highest unit price, in minor units (10 billion in major units).
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// Most SKUs in one BatchGetStock.
pub const MAX_BATCH_SKUS: usize = 500;
/// Longest free-text reason (a release or cancellation), in bytes.
pub const MAX_REASON_LEN: usize = 256;
/// Most order ids in one BatchGetOrders.
pub const MAX_BATCH_ORDERS: usize = 500;
/// Most orders on one ListOrders page; a request for more gets this many.
pub const MAX_PAGE_SIZE: i32 = 500;
/// Orders on one ListOrders page when the request does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 50;
