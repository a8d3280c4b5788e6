//! A few HTTP/2 connections shared by every request, with the bearer token attached.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use orderflow_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use orderflow_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use super::args::Target;

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
            .parse()
            .context("a bearer token must be printable ASCII")?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type OrderClient = OrderServiceClient<InterceptedService<Channel, Bearer>>;
pub type InventoryClient = InventoryServiceClient<InterceptedService<Channel, Bearer>>;

/// One connection to `url`, established now so a wrong address fails before the run.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url} is not a valid URL"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Clients of order-api spread over `connections` HTTP/2 connections, and of inventory-svc.
pub struct Pool {
    buyer: Vec<OrderClient>,
    operator: Vec<OrderClient>,
    pub inventory: InventoryClient,
    pub inventory_admin: InventoryClient,
    /// Round robin over the connections.
    turn: AtomicU64,
}

impl Pool {
    pub async fn connect(target: &Target, connections: usize) -> anyhow::Result<Self> {
        // Without a buyer token the admin token (if any) does everything.
        let buyer_token = target.token.as_deref().or(target.admin_token.as_deref());
        let admin_token = target.admin_token.as_deref().or(target.token.as_deref());
        let (buyer_auth, admin_auth) = (Bearer::new(buyer_token)?, Bearer::new(admin_token)?);
        // Several order-apis (comma-separated) share the connections in turn.
        let order_apis: Vec<&str> = target.order_api.split(',').map(str::trim).collect();
        let mut channels = Vec::new();
        for index in 0..connections.max(order_apis.len()) {
            channels.push(connect(order_apis[index % order_apis.len()]).await?);
        }
        let inventory = connect(&target.inventory).await?;
        Ok(Self {
            buyer: channels
                .iter()
                .map(|channel| {
                    OrderServiceClient::with_interceptor(channel.clone(), buyer_auth.clone())
                })
                .collect(),
            operator: channels
                .iter()
                .map(|channel| {
                    OrderServiceClient::with_interceptor(channel.clone(), admin_auth.clone())
                })
                .collect(),
            inventory: InventoryServiceClient::with_interceptor(inventory.clone(), buyer_auth),
            inventory_admin: InventoryServiceClient::with_interceptor(inventory, admin_auth),
            turn: AtomicU64::new(0),
        })
    }

    fn turn(&self) -> usize {
        (self.turn.fetch_add(1, Ordering::Relaxed) % self.buyer.len() as u64) as usize
    }

    /// A buyer's client, on the next connection.
    pub fn buyer(&self) -> OrderClient {
        self.buyer[self.turn()].clone()
    }

    /// An operator's client (ShipOrder, CompleteOrder), on the next connection.
    pub fn operator(&self) -> OrderClient {
        self.operator[self.turn()].clone()
    }
}
