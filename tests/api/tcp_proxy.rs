//! A TCP proxy the test controls, standing for the network between a replica and PostgreSQL.
//! It can hold every byte of the connections it carries — a partition, or a database process
//! that stopped answering without closing its sockets — and hold new connections as well,
//! without ever closing a held socket (that would be a reset, which is easy to notice).

use std::net::SocketAddr;
use std::sync::Arc;
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
    tokio::spawn(pump(client_read, server_write, id, control.clone()));
    tokio::spawn(pump(server_read, client_write, id, control));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    control: Arc<Control>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buffer).await else {
            return;
        };
        if id < control.frozen_below.load(Ordering::SeqCst) {
            // Held: neither forwarded nor closed.
            let _held = (from, to);
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
