//! The `/weft/sync/1` exchange: when two members connect, each pushes to
//! the other, directly, the signed records it holds that a newcomer needs
//! (every member's latest announcement, the revocations, its own path
//! observations). A member that was down, or joined after the others
//! announced, so learns the whole membership in one round trip instead of
//! waiting for the next periodic announcements. Pushed records are not
//! gossiped further; the receiver validates each like a gossip record.
//!
//! This file owns only the framing: a request is a 4-byte big-endian count
//! of records, then each record as a 2-byte big-endian length and its
//! bytes; the response is one byte, 1. At most [`MAX_SYNC_RECORDS`] records
//! of at most [`MAX_SYNC_RECORD_LEN`] bytes each, except one (the authority
//! chain) of up to [`MAX_SYNC_LONG_RECORD_LEN`]: a larger push is refused
//! as invalid data before anything is allocated for it.

use std::io;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::StreamProtocol;

/// The protocol name negotiated on the sync stream.
pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/weft/sync/1");

/// Most records one push carries.
pub const MAX_SYNC_RECORDS: usize = 16_384;
/// Largest record in a push (a gossip record's own limit).
pub const MAX_SYNC_RECORD_LEN: usize = weft_protocol::membership::records::MAX_RECORD_LEN;
/// Largest record in a push that carries the authority chain; one such
/// record per push at most.
pub const MAX_SYNC_LONG_RECORD_LEN: usize =
    weft_protocol::membership::records::MAX_AUTHORITY_RECORD_LEN;
// Its length travels in two bytes.
const _: () = assert!(MAX_SYNC_LONG_RECORD_LEN <= u16::MAX as usize);

/// How long a push may take end to end.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The request-response behaviour carrying pushes both ways.
pub(super) type Behaviour = request_response::Behaviour<Codec>;

/// Builds the behaviour: inbound and outbound.
pub(super) fn behaviour() -> Behaviour {
    request_response::Behaviour::new(
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(SYNC_TIMEOUT),
    )
}

/// The codec: a request is a list of records, the response an ack.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Codec;

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<Vec<u8>>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_records(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut ack = [0u8; 1];
        io.read_exact(&mut ack).await?;
        if ack[0] != 1 {
            return Err(invalid("sync: unknown acknowledgement"));
        }
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        records: Vec<Vec<u8>>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_records(io, &records).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[1]).await?;
        io.flush().await
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one push, refusing more than [`MAX_SYNC_RECORDS`] records or one
/// longer than [`MAX_SYNC_RECORD_LEN`]; a stream that ends early is an
/// error.
async fn read_records<T>(io: &mut T) -> io::Result<Vec<Vec<u8>>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut count = [0u8; 4];
    io.read_exact(&mut count).await?;
    let count = u32::from_be_bytes(count) as usize;
    if count > MAX_SYNC_RECORDS {
        return Err(invalid("sync: too many records"));
    }
    // Grown as records arrive, not allocated from the peer's count.
    let mut records = Vec::new();
    let mut long_seen = false;
    for _ in 0..count {
        let mut len = [0u8; 2];
        io.read_exact(&mut len).await?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_SYNC_RECORD_LEN {
            if long_seen || len > MAX_SYNC_LONG_RECORD_LEN {
                return Err(invalid("sync: record longer than the limit"));
            }
            long_seen = true;
        }
        let mut record = vec![0; len];
        io.read_exact(&mut record).await?;
        records.push(record);
    }
    Ok(records)
}

/// Writes one push.
async fn write_records<T>(io: &mut T, records: &[Vec<u8>]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if records.len() > MAX_SYNC_RECORDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sync: too many records",
        ));
    }
    let long = records
        .iter()
        .filter(|r| r.len() > MAX_SYNC_RECORD_LEN)
        .count();
    if long > 1 || records.iter().any(|r| r.len() > MAX_SYNC_LONG_RECORD_LEN) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sync: record too long",
        ));
    }
    io.write_all(&(records.len() as u32).to_be_bytes()).await?;
    for record in records {
        // Checked above: every length fits.
        let len = u16::try_from(record.len()).unwrap_or(u16::MAX);
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(record).await?;
    }
    io.flush().await
}

#[cfg(test)]
mod tests {
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;

    use super::*;

    fn framed(records: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        block_on(write_records(&mut stream, records)).unwrap();
        stream
    }

    #[test]
    fn a_push_round_trips_with_empty_and_full_size_records() {
        let records = vec![vec![], vec![1, 2, 3], vec![9; MAX_SYNC_RECORD_LEN]];
        let read = block_on(read_records(&mut Cursor::new(framed(&records)))).unwrap();
        assert_eq!(read, records);
    }

    #[test]
    fn a_push_claiming_too_many_records_is_refused_before_reading_them() {
        let stream = ((MAX_SYNC_RECORDS + 1) as u32).to_be_bytes().to_vec();
        let error = block_on(read_records(&mut Cursor::new(stream))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn one_long_record_the_authority_chain_passes_and_a_second_does_not() {
        let one = vec![vec![7u8; MAX_SYNC_LONG_RECORD_LEN], vec![1; 10]];
        let read = block_on(read_records(&mut Cursor::new(framed(&one)))).unwrap();
        assert_eq!(read, one);
        let two = vec![vec![7u8; MAX_SYNC_RECORD_LEN + 1]; 2];
        assert!(block_on(write_records(&mut Vec::new(), &two)).is_err());
        let mut stream = 2u32.to_be_bytes().to_vec();
        for _ in 0..2 {
            stream.extend_from_slice(&((MAX_SYNC_RECORD_LEN + 1) as u16).to_be_bytes());
            stream.extend_from_slice(&vec![0; MAX_SYNC_RECORD_LEN + 1]);
        }
        let error = block_on(read_records(&mut Cursor::new(stream))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_oversized_record_is_neither_written_nor_read() {
        let big = vec![vec![0u8; MAX_SYNC_LONG_RECORD_LEN + 1]];
        assert!(block_on(write_records(&mut Vec::new(), &big)).is_err());
        let mut stream = 1u32.to_be_bytes().to_vec();
        stream.extend_from_slice(&u16::MAX.to_be_bytes());
        stream.extend_from_slice(&[0; 16]);
        let error = block_on(read_records(&mut Cursor::new(stream))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_truncated_push_is_an_error() {
        let mut stream = framed(&[vec![5; 10]]);
        stream.pop();
        let error = block_on(read_records(&mut Cursor::new(stream))).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
