//! The contracts every orderflow process shares: gRPC services (tonic/prost code generated
//! from `proto/orderflow/**.proto`) and the events carried on Kafka.

pub mod order {
    pub mod v1 {
        tonic::include_proto!("orderflow.order.v1");
    }
}

pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("orderflow.inventory.v1");
    }
}

pub mod notify {
    pub mod v1 {
        tonic::include_proto!("orderflow.notify.v1");
    }
}

pub mod consumer {
    pub mod v1 {
        tonic::include_proto!("orderflow.consumer.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("orderflow.events.v1");
    }
}

pub mod limits;
pub mod order_status;
pub mod refusals;
pub mod topics;

/// Encoded `FileDescriptorSet` of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/orderflow_descriptor.bin"));
