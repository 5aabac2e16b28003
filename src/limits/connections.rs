//! A cap on the TCP connections one peer address holds open at once.
//!
//! Each connection carries at most `TALLY_STREAMS_PER_CONNECTION_MAX` streams, so this bounds
//! what one address can make the server hold. A connection over the cap is closed as soon as
//! it is accepted, before any byte is read.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures_util::{Stream, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// Wraps accepted connections: those of a peer already at `per_peer_max` are closed, the others
/// are counted until they close.
pub fn cap_per_peer<St, E>(
    incoming: St,
    per_peer_max: usize,
) -> impl Stream<Item = Result<CountedConnection, E>>
where
    St: Stream<Item = Result<TcpStream, E>>,
{
    let counts: Counts = Arc::default();
    incoming.filter_map(move |accepted| {
        let counts = counts.clone();
        async move {
            let stream = match accepted {
                Ok(stream) => stream,
                Err(err) => return Some(Err(err)),
            };
            // A socket without a peer address is already gone.
            let peer = stream.peer_addr().ok()?.ip();
            let mut held = counts.lock().expect("connection counts lock");
            let n = held.entry(peer).or_default();
            if *n >= per_peer_max {
                drop(held);
                metrics::counter!("tally_connections_refused_total").increment(1);
                tracing::debug!(%peer, "connection refused: the peer is at its connection cap");
                return None;
            }
            *n += 1;
            drop(held);
            Some(Ok(CountedConnection {
                stream,
                peer,
                counts,
            }))
        }
    })
}

/// An accepted connection, counted against its peer until dropped.
pub struct CountedConnection {
    stream: TcpStream,
    peer: IpAddr,
    counts: Counts,
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        let mut held = self.counts.lock().expect("connection counts lock");
        if let Some(n) = held.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

impl Connected for CountedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
