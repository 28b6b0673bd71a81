//! A TCP proxy the test controls, standing for the network between a replica and PostgreSQL.
//! It can hold every byte of the connections it carries — a partition, or a database process
//! that stopped answering without closing its sockets — and hold new connections as well,
//! without ever closing a held socket (that would be a reset, which is easy to notice). It notes
//! which held connections their clients close, by the first bytes each client sent (for
//! PostgreSQL, the startup message naming the application).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub struct TcpProxy {
    pub addr: SocketAddr,
    control: Arc<Control>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Control {
    /// Connections are numbered as accepted; those numbered below this forward nothing more.
    frozen_below: AtomicU64,
    next: AtomicU64,
    /// New connections are accepted and held rather than forwarded.
    cut: AtomicBool,
    /// The first bytes the client sent on each held connection its client has closed since.
    closed_by_client: Mutex<Vec<Vec<u8>>>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(Control::default());
        let accept = tokio::spawn({
            let control = control.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let id = control.next.fetch_add(1, Ordering::SeqCst);
                    let control = control.clone();
                    tokio::spawn(carry(client, upstream, id, control));
                }
            }
        });
        Self {
            addr,
            control,
            accept,
        }
    }

    /// Every connection open now stops forwarding, for good: what either side sends is held.
    pub fn freeze_open_connections(&self) {
        let next = self.control.next.load(Ordering::SeqCst);
        self.control.frozen_below.store(next, Ordering::SeqCst);
    }

    /// The first bytes sent on each connection frozen by `freeze_open_connections` that its
    /// client has closed since.
    pub fn frozen_connections_closed_by_client(&self) -> Vec<Vec<u8>> {
        self.control.closed_by_client.lock().unwrap().clone()
    }

    /// While cut, new connections are accepted and then held: nothing reaches the server.
    pub fn cut_new_connections(&self, cut: bool) {
        self.control.cut.store(cut, Ordering::SeqCst);
    }
}

async fn carry(client: TcpStream, upstream: SocketAddr, id: u64, control: Arc<Control>) {
    if control.cut.load(Ordering::SeqCst) {
        let _held = client;
        return std::future::pending::<()>().await;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::spawn(pump(
        client_read,
        server_write,
        id,
        Direction::FromClient,
        control.clone(),
    ));
    tokio::spawn(pump(
        server_read,
        client_write,
        id,
        Direction::FromServer,
        control,
    ));
}

#[derive(PartialEq)]
enum Direction {
    FromClient,
    FromServer,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    direction: Direction,
    control: Arc<Control>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut opening = Vec::new();
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if opening.is_empty() {
            opening = buffer[..n].to_vec();
        }
        if id < control.frozen_below.load(Ordering::SeqCst) {
            // Held: nothing is forwarded and the server's end is never closed; what the client
            // sends is read and dropped, so its closing its end is seen.
            let _held = to;
            if direction == Direction::FromClient {
                let mut closed = n == 0;
                while !closed {
                    closed = !matches!(from.read(&mut buffer).await, Ok(more) if more > 0);
                }
                control.closed_by_client.lock().unwrap().push(opening);
            }
            std::future::pending::<()>().await;
            return;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
