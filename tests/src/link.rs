//! A TCP link between two services that a test can break: **cut**, it refuses new connections
//! and drops the open ones, as a network partition or a crashed peer would; **stalled**, it
//! holds every byte until it is restored, as a congested network would (what was sent arrives
//! late, all of it). Restored, it forwards again; clients reconnect by themselves.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Stalled,
    Cut,
}

pub struct Link {
    /// Where clients connect instead of the upstream.
    pub address: SocketAddr,
    state: Arc<watch::Sender<State>>,
}

impl Link {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a loopback port");
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(watch::channel(State::Open).0);
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *shared.borrow() == State::Cut {
                    continue; // dropped: refused
                }
                let state = shared.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut cut = state.clone();
                    tokio::select! {
                        () = forward(client_read, server_write, state.clone()) => {}
                        () = forward(server_read, client_write, state) => {}
                        _ = cut.wait_for(|state| *state == State::Cut) => {}
                    }
                });
            }
        });
        Self { address, state }
    }

    pub fn cut(&self) {
        self.state.send_replace(State::Cut);
    }

    pub fn stall(&self) {
        self.state.send_replace(State::Stalled);
    }

    pub fn restore(&self) {
        self.state.send_replace(State::Open);
    }
}

/// Copies one direction, holding what it read while the link is stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if state
            .wait_for(|state| *state != State::Stalled)
            .await
            .is_err()
        {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
