//! Bad input gets INVALID_ARGUMENT or NOT_FOUND naming the field, and writes nothing anywhere.

use orderflow_proto::inventory::v1::{
    BatchGetStockRequest, CommitRequest, ConfirmReservationsRequest, ReleaseRequest,
    SetStockRequest,
};
use orderflow_proto::order::v1::CreateOrderRequest;
use orderflow_tests::inventory::reserve_request_for;
use orderflow_tests::stack::Stack;
use orderflow_tests::{assert_status, order_request};
use tonic::Code;

fn with<F: FnOnce(&mut CreateOrderRequest)>(change: F) -> CreateOrderRequest {
    let mut request = order_request("key", "user", &[("GOOD-1", 1)]);
    change(&mut request);
    request
}

#[tokio::test]
async fn bad_orders_are_refused_naming_the_field_and_leave_nothing_behind() {
    let stack = Stack::start().await;
    stack.set_stock("GOOD-1", 10, 100).await;
    let ten_kb = "x".repeat(10 * 1024);
    let thousand_items: Vec<(String, i64)> = (0..1000).map(|i| (format!("S-{i}"), 1)).collect();
    let thousand_items: Vec<(&str, i64)> = thousand_items
        .iter()
        .map(|(sku, q)| (sku.as_str(), *q))
        .collect();

    let cases: Vec<(&str, CreateOrderRequest, Code, &str)> = vec![
        (
            "no items",
            with(|r| r.items.clear()),
            Code::InvalidArgument,
            "items: must contain at least one item",
        ),
        (
            "quantity 0",
            with(|r| r.items[0].quantity = 0),
            Code::InvalidArgument,
            "items[0].quantity: must be between 1 and 10000, got 0",
        ),
        (
            "negative quantity",
            with(|r| r.items[0].quantity = -5),
            Code::InvalidArgument,
            "items[0].quantity: must be between 1 and 10000, got -5",
        ),
        (
            "absurd quantity",
            with(|r| r.items[0].quantity = 1_000_000_000_000),
            Code::InvalidArgument,
            "items[0].quantity",
        ),
        (
            "1,000 items",
            order_request("key", "user", &thousand_items),
            Code::InvalidArgument,
            "items: must contain at most 100 items, got 1000",
        ),
        (
            "empty idempotency key",
            with(|r| r.idempotency_key.clear()),
            Code::InvalidArgument,
            "idempotency_key: must not be empty",
        ),
        (
            "10 KB idempotency key",
            with(|r| r.idempotency_key = ten_kb.clone()),
            Code::InvalidArgument,
            "idempotency_key: must be at most 128 bytes",
        ),
        (
            "empty user id",
            with(|r| r.user_id.clear()),
            Code::InvalidArgument,
            "user_id: must not be empty",
        ),
        (
            "10 KB user id",
            with(|r| r.user_id = ten_kb.clone()),
            Code::InvalidArgument,
            "user_id: must be at most 128 bytes",
        ),
        (
            "empty SKU",
            with(|r| r.items[0].sku.clear()),
            Code::InvalidArgument,
            "items[0].sku: must not be empty",
        ),
        (
            "10 KB SKU",
            with(|r| r.items[0].sku = ten_kb.clone()),
            Code::InvalidArgument,
            "items[0].sku: must be at most 64 bytes",
        ),
        (
            "duplicate SKU",
            order_request("key", "user", &[("GOOD-1", 1), ("GOOD-1", 2)]),
            Code::InvalidArgument,
            "items[1].sku: SKU \"GOOD-1\" appears more than once",
        ),
        (
            "unknown SKU",
            order_request("key", "user", &[("NOPE", 1)]),
            Code::NotFound,
            "items[0].sku: unknown SKU \"NOPE\"",
        ),
        // All or nothing: the known first item must not stay reserved.
        (
            "unknown second SKU",
            order_request("key", "user", &[("GOOD-1", 1), ("NOPE", 1)]),
            Code::NotFound,
            "items[1].sku: unknown SKU \"NOPE\"",
        ),
        (
            "more than in stock",
            order_request("key", "user", &[("GOOD-1", 11)]),
            Code::FailedPrecondition,
            "insufficient stock for SKU \"GOOD-1\": requested 11, available 10",
        ),
    ];
    for (name, request, code, message) in cases {
        let status = stack.create_order(request).await.unwrap_err();
        assert_status(name, &status, code, message);
    }

    for (name, order_id, code, message) in [
        (
            "empty order id",
            String::new(),
            Code::InvalidArgument,
            "order_id: must not be empty",
        ),
        (
            "10 KB order id",
            ten_kb.clone(),
            Code::InvalidArgument,
            "order_id: ",
        ),
        (
            "malformed order id",
            "not-an-id".to_owned(),
            Code::InvalidArgument,
            "order_id: \"not-an-id\" is not a valid id",
        ),
        (
            "unknown order id",
            uuid::Uuid::now_v7().to_string(),
            Code::NotFound,
            "not found",
        ),
    ] {
        let status = stack.get_order(&order_id).await.unwrap_err();
        assert_status(name, &status, code, message);
    }

    // Nothing was written: stock untouched, no order, claim or reservation, no event.
    let stock = stack.stock("GOOD-1").await;
    assert_eq!((stock.available, stock.reserved), (10, 0));
    assert!(stack.redis_keys("order:*").await.is_empty());
    assert!(stack.redis_keys("idempotency:*").await.is_empty());
    assert!(stack.redis_keys("reservation:*").await.is_empty());
    assert_eq!(
        stack
            .published(orderflow_proto::topics::ORDER_CREATED)
            .await,
        0
    );
    assert_eq!(stack.persisted_orders().await, 0);
}

#[tokio::test]
async fn bad_inventory_requests_are_refused_naming_the_field() {
    let stack = Stack::start().await;
    stack.set_stock("GOOD-2", 10, 100).await;
    let mut inventory = stack.inventory.clone();

    let set = |sku: &str, quantity, price_cents| SetStockRequest {
        sku: sku.into(),
        quantity,
        price_cents,
    };
    for (request, message) in [
        (set("", 1, 1), "sku: must not be empty"),
        (set("A", -1, 1), "quantity: must be between 0 and"),
        (set("A", 1, -1), "price_cents: must be between 0 and"),
        (set("A B", 1, 1), "sku: must not contain whitespace"),
    ] {
        let status = inventory.set_stock(request).await.unwrap_err();
        assert_status("SetStock", &status, Code::InvalidArgument, message);
    }

    let reserve = reserve_request_for;
    let order_id = uuid::Uuid::now_v7().to_string();
    for (request, code, message) in [
        (
            reserve("", &[("GOOD-2", 1)]),
            Code::InvalidArgument,
            "order_id: must not be empty",
        ),
        (
            reserve(&order_id, &[("GOOD-2", -1)]),
            Code::InvalidArgument,
            "items[0].quantity",
        ),
        (
            reserve(&order_id, &[("GOOD-2", 1), ("GOOD-2", 1)]),
            Code::InvalidArgument,
            "items[1].sku: SKU \"GOOD-2\" appears more than once",
        ),
        (
            reserve(&order_id, &[("MISSING", 1)]),
            Code::NotFound,
            "items[0].sku: unknown SKU \"MISSING\"",
        ),
        (
            reserve(&order_id, &[("GOOD-2", 1), ("MISSING", 1)]),
            Code::NotFound,
            "items[1].sku: unknown SKU \"MISSING\"",
        ),
        (
            reserve("not-a-uuid", &[("GOOD-2", 1)]),
            Code::InvalidArgument,
            "order_id",
        ),
        (
            reserve(&order_id, &[("GOOD-2", 10_001)]),
            Code::InvalidArgument,
            "items[0].quantity: must be between 1 and 10000",
        ),
    ] {
        let status = inventory.reserve(request).await.unwrap_err();
        assert_status("Reserve", &status, code, message);
    }

    let status = inventory
        .release(ReleaseRequest {
            order_id: order_id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let status = inventory
        .release(ReleaseRequest {
            order_id: order_id.clone(),
            reason: "x".repeat(257),
        })
        .await
        .unwrap_err();
    assert_status(
        "Release",
        &status,
        Code::InvalidArgument,
        "reason: must be at most 256",
    );
    let status = inventory
        .commit(CommitRequest {
            order_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_status("Commit", &status, Code::InvalidArgument, "order_id");

    let status = inventory
        .batch_get_stock(BatchGetStockRequest { skus: vec![] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    for (order_ids, message) in [
        (vec![], "order_ids: must hold 1 to 500 ids, got 0"),
        (
            vec![order_id.clone(), "nope".into()],
            "order_ids[1]: \"nope\" is not a valid id",
        ),
    ] {
        let status = inventory
            .confirm_reservations(ConfirmReservationsRequest { order_ids })
            .await
            .unwrap_err();
        assert_status(
            "ConfirmReservations",
            &status,
            Code::InvalidArgument,
            message,
        );
    }

    let stock = stack.stock("GOOD-2").await;
    assert_eq!((stock.available, stock.reserved), (10, 0));
    assert!(stack.redis_keys("reservation:*").await.is_empty());
    let durable: (i64, i64, i64) =
        sqlx::query_as("SELECT available, reserved, sold FROM skus WHERE sku = 'GOOD-2'")
            .fetch_one(&stack.db)
            .await
            .unwrap();
    assert_eq!(durable, (10, 0, 0));
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM reservations")
        .fetch_one(&stack.db)
        .await
        .unwrap();
    assert_eq!(reservations, 0);
}
