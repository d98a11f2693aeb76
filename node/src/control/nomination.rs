//! The `/weft/authority/1` exchange: an authority holder asks a member to
//! become one (the member generates its own authority key and answers with
//! its public half), over a connection whose peer identity QUIC already
//! proved. Only members may ask; the mesh checks that the asker holds a
//! key of the current set (`weft_protocol::membership::nomination`).
//!
//! This file owns only the protocol name, the deadline and the bound on
//! waiting requests; the framing is the renewal exchange's.

use std::time::Duration;

use libp2p::request_response::{self, ProtocolSupport};
use libp2p::StreamProtocol;

use super::renewal::Codec;

/// The protocol name negotiated on the nomination stream.
pub(super) const PROTOCOL: StreamProtocol = StreamProtocol::new("/weft/authority/1");

/// How long a nomination may take: a round trip, a key generated and
/// written with an fsync.
pub const NOMINATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Nominations waiting for the mesh's answer, at most: an operator adds
/// holders one at a time.
pub const MAX_PENDING_NOMINATIONS: usize = 4;

/// The request-response behaviour carrying nominations.
pub(super) type Behaviour = request_response::Behaviour<Codec>;

/// Builds the behaviour: inbound and outbound, with [`NOMINATION_TIMEOUT`].
pub(super) fn behaviour() -> Behaviour {
    request_response::Behaviour::new(
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(NOMINATION_TIMEOUT),
    )
}
