//! The durable SKU catalog in PostgreSQL: every SKU that exists, its price and the quantity an
//! operator last set. Redis counters are derived from it; it decides whether a SKU exists.

use sqlx::PgPool;

use crate::error::InventoryError;

#[derive(Clone)]
pub struct Catalog {
    pool: PgPool,
}

impl Catalog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn upsert(
        &self,
        sku: &str,
        quantity: i64,
        price_cents: i64,
    ) -> Result<(), InventoryError> {
        sqlx::query(
            "INSERT INTO skus (sku, quantity, price_cents) VALUES ($1, $2, $3) \
             ON CONFLICT (sku) DO UPDATE \
             SET quantity = EXCLUDED.quantity, price_cents = EXCLUDED.price_cents, updated_at = now()",
        )
        .bind(sku)
        .bind(quantity)
        .bind(price_cents)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Those of `skus` that exist in the catalog.
    pub async fn existing(&self, skus: &[String]) -> Result<Vec<String>, InventoryError> {
        Ok(
            sqlx::query_scalar("SELECT sku FROM skus WHERE sku = ANY($1)")
                .bind(skus)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
