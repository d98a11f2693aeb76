//! The `/weft/credential/1` exchange: right after a connection is
//! established, each side sends its membership credential as a request and
//! answers the other's request with its own, over libp2p request-response.
//!
//! This file owns only the framing: a credential is a two-byte big-endian
//! length and that many bytes, at most [`MAX_CREDENTIAL_LEN`]. The length
//! tells a credential (even an empty one) from a peer that closed the
//! stream without answering. It never interprets the bytes; judging them is
//! the caller's gate.

use std::io;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::StreamProtocol;

use super::api::{CREDENTIAL_TIMEOUT, MAX_CREDENTIAL_LEN};

/// The protocol name negotiated on the credential stream.
pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/weft/credential/1");

/// The request-response behaviour carrying credentials both ways.
pub(super) type Behaviour = request_response::Behaviour<Codec>;

/// Builds the behaviour: inbound and outbound, and an unanswered request
/// fails after [`CREDENTIAL_TIMEOUT`], the same deadline the gate enforces.
pub(super) fn behaviour() -> Behaviour {
    request_response::Behaviour::new(
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(CREDENTIAL_TIMEOUT),
    )
}

/// Raw-bytes codec: the request is the dialer's credential, the response
/// the listener's.
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
        read_credential(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_credential(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        credential: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_credential(io, &credential).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        credential: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_credential(io, &credential).await
    }
}

/// Reads one length-prefixed credential, refusing one longer than
/// [`MAX_CREDENTIAL_LEN`]; a stream that ends early is an error.
async fn read_credential<T>(io: &mut T) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    read_frame(io, MAX_CREDENTIAL_LEN).await
}

/// Writes one length-prefixed credential.
async fn write_credential<T>(io: &mut T, credential: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    write_frame(io, credential, MAX_CREDENTIAL_LEN).await
}

/// Reads one frame: a two-byte big-endian length, at most `max`, and that
/// many bytes. A stream that ends early is an error. (The renewal exchange
/// frames its messages the same way.)
pub(super) async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame longer than the limit",
        ));
    }
    let mut frame = vec![0; len];
    io.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Writes one frame of at most `max` bytes (and at most 65,535).
pub(super) async fn write_frame<T>(io: &mut T, frame: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u16::try_from(frame.len())
        .ok()
        .filter(|len| usize::from(*len) <= max)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(frame).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    use super::*;

    fn framed(credential: &[u8]) -> Vec<u8> {
        let mut stream = Vec::new();
        block_on(write_credential(&mut stream, credential)).unwrap();
        stream
    }

    #[test]
    fn a_credential_of_exactly_the_limit_round_trips() {
        let bytes = vec![7u8; MAX_CREDENTIAL_LEN];
        let read = block_on(read_credential(&mut Cursor::new(framed(&bytes)))).unwrap();
        assert_eq!(read, bytes);
    }

    #[test]
    fn a_credential_over_the_limit_is_neither_written_nor_read() {
        let bytes = vec![7u8; MAX_CREDENTIAL_LEN + 1];
        let error = block_on(write_credential(&mut Vec::new(), &bytes)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let mut stream = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        stream.extend_from_slice(&bytes);
        let error = block_on(read_credential(&mut Cursor::new(stream))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_empty_credential_is_not_an_unanswered_stream() {
        let read = block_on(read_credential(&mut Cursor::new(framed(b"")))).unwrap();
        assert!(read.is_empty());
        let error = block_on(read_credential(&mut Cursor::new(Vec::new()))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_truncated_credential_is_an_error() {
        let mut stream = framed(b"member");
        stream.pop();
        let error = block_on(read_credential(&mut Cursor::new(stream))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
