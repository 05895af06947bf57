//! A loopback TCP proxy that breaks the first N connections on purpose, to show that the S3
//! client's retries recover from a flaky network and that persistent faults end as
//! `ErrorKind::Transient`.
//!
//! Faults are per connection, not per HTTP request: the client opens a new connection after
//! a broken one, so "the first N connections" is "the first N attempts that hit the network".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What to do to a faulty connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Read the start of the request, then reset the connection (TCP RST).
    Reset,
    /// Read the request and never answer (until the client gives up).
    Stall,
    /// Forward the request, then pass on only the first bytes of the answer and close.
    Truncate,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    faults_left: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies to `upstream`, applying `fault` to the first `first_n` connections
    /// (`usize::MAX` for all of them).
    pub async fn start(upstream: SocketAddr, fault: Fault, first_n: usize) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let faults_left = Arc::new(AtomicUsize::new(first_n));
        let connections = Arc::new(AtomicUsize::new(0));
        let (left, conns) = (faults_left.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let faulty = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                tokio::spawn(async move {
                    if faulty {
                        inject(client, upstream, fault).await;
                    } else if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        FaultProxy {
            addr,
            faults_left,
            connections,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Faults not yet injected.
    pub fn faults_left(&self) -> usize {
        self.faults_left.load(Ordering::SeqCst)
    }
}

async fn inject(mut client: TcpStream, upstream: SocketAddr, fault: Fault) {
    let mut buf = vec![0u8; 64 * 1024];
    match fault {
        Fault::Reset => {
            let _ = client.read(&mut buf).await;
            let _ = client.set_zero_linger();
            drop(client);
        }
        Fault::Stall => {
            // Swallow whatever the client sends; answer nothing.
            let deadline = tokio::time::sleep(Duration::from_secs(120));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    r = client.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return },
                }
            }
        }
        Fault::Truncate => {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            // Pass on the first 20 bytes of the answer ("HTTP/1.1 200 OK\r\n..."), then close.
            let mut passed = 0;
            while passed < 20 {
                match sr.read(&mut buf[..20 - passed]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        passed += n;
                    }
                }
            }
            let _ = cw.shutdown().await;
            up.abort();
        }
    }
}

/// A proxy that forwards faithfully until `limit` bytes of requests went through it (over
/// all connections), then goes silent for good: nothing more passes either way on any
/// connection, open or new, and nothing is closed (until the proxy is dropped), as in a
/// network outage longer than any retry. Requests in flight then end by the client's own
/// timeout. Counting bytes rather than connections makes the moment of the outage
/// independent of connection reuse; silence rather than resets makes it independent of how
/// fast the client notices (every part the client started is still in flight when it
/// does).
pub struct OutageProxy {
    pub addr: SocketAddr,
    down: Arc<tokio::sync::watch::Sender<bool>>,
    closed: Arc<tokio::sync::watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.closed.send_replace(true);
    }
}

impl OutageProxy {
    pub async fn start(upstream: SocketAddr, limit: u64) -> OutageProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let down = Arc::new(tokio::sync::watch::channel(false).0);
        let closed = Arc::new(tokio::sync::watch::channel(false).0);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (d, c) = (down.clone(), closed.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (down, mut closed, sent) = (d.clone(), c.subscribe(), sent.clone());
                tokio::spawn(async move {
                    let mut client = client;
                    let mut watch = down.subscribe();
                    let already_down = *watch.borrow();
                    if !already_down {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            forward(&mut client, &mut server, &sent, limit, &down, &mut watch)
                                .await;
                        }
                    }
                    // Silent until the proxy goes away.
                    let _ = closed.wait_for(|c| *c).await;
                });
            }
        });
        OutageProxy {
            addr,
            down,
            closed,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// True once the outage began.
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }
}

/// Copies both ways until the outage (or either side closes).
async fn forward(
    client: &mut TcpStream,
    server: &mut TcpStream,
    sent: &std::sync::atomic::AtomicU64,
    limit: u64,
    down: &tokio::sync::watch::Sender<bool>,
    watch: &mut tokio::sync::watch::Receiver<bool>,
) {
    let (mut up, mut back) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        tokio::select! {
            _ = async { watch.wait_for(|d| *d).await.is_ok() } => return,
            r = client.read(&mut up) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 >= limit {
                    down.send_replace(true);
                    return;
                }
                if server.write_all(&up[..n]).await.is_err() {
                    return;
                }
            }
            r = server.read(&mut back) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                if client.write_all(&back[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
