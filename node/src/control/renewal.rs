//! The `/weft/renew/1` exchange: a member asks an authority holder for a
//! new certificate and the holder answers, over libp2p request-response on
//! a connection whose peer identity QUIC already proved.
//!
//! This file owns only the framing (a two-byte length and at most
//! [`MAX_RENEWAL_LEN`] bytes each way, as credentials are framed) and the
//! deadline. It never interprets the bytes: the request and its answer are
//! `weft_protocol::membership::renewal` messages, judged by the mesh.

use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncWrite};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::StreamProtocol;

use super::credential::{read_frame, write_frame};

/// The protocol name negotiated on the renewal stream.
pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/weft/renew/1");

/// Largest request or answer: a certificate and a little framing.
pub const MAX_RENEWAL_LEN: usize = weft_protocol::membership::renewal::MAX_RENEWAL_MESSAGE_LEN;

/// How long a renewal may take before the asker tries another holder: a
/// round trip, a signature and an fsync of the holder's store.
pub const RENEWAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Renewal requests waiting for the mesh's answer, at most: more are
/// turned away at once (their stream closed), so the asker tries another
/// holder or later.
pub const MAX_PENDING_RENEWALS: usize = 32;

/// The request-response behaviour carrying renewals.
pub(super) type Behaviour = request_response::Behaviour<Codec>;

/// Builds the behaviour: inbound and outbound, with [`RENEWAL_TIMEOUT`].
pub(super) fn behaviour() -> Behaviour {
    request_response::Behaviour::new(
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(RENEWAL_TIMEOUT),
    )
}

/// Raw-bytes codec, framed like credentials.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Codec;

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_RENEWAL_LEN).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_RENEWAL_LEN).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, MAX_RENEWAL_LEN).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, MAX_RENEWAL_LEN).await
    }
}
