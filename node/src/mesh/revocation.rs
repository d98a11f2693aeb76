//! What came of a revocation this node issued (`weft revoke`): whether it
//! was stored (flushed) here and whether gossipsub published it, and the
//! answer the admin socket gives for that.
//!
//! A revocation reaches the mesh by either way: published, members drop
//! the revoked one within seconds; stored, this node keeps it across
//! restarts and pushes it to every member that connects (as members that
//! received it do). So it failed only if neither worked; if one did, it
//! succeeded, with a warning naming the one that failed. The revoked member
//! is dropped from this node's own planes either way, before any of this.
//!
//! It never waits on the main task: [`Pending::answer`] runs on the
//! services runtime and waits at most [`ANSWER_WITHIN`] for each part.

use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::admin::Response;
use crate::control::{NotQueued, PublishError};

/// Longest wait for the store write and for gossipsub's answer, each: the
/// whole answer fits well inside the 10 s `weft revoke` waits.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// A revocation issued, its store write and publish under way.
#[derive(Debug)]
pub struct Pending {
    /// The store write's answer; dropped unanswered if the store writer's
    /// queue was full.
    pub stored: oneshot::Receiver<anyhow::Result<()>>,
    /// Gossipsub's answer to the publish, or why it was not even queued.
    pub published: Result<oneshot::Receiver<Result<(), PublishError>>, NotQueued>,
}

impl Pending {
    /// Waits for both parts (each at most [`ANSWER_WITHIN`]) and says what
    /// came of the revocation of `name`.
    pub async fn answer(self, name: &str) -> Response {
        let stored = match tokio::time::timeout(ANSWER_WITHIN, self.stored).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("{e:#}")),
            Ok(Err(_)) => Err("the store writer's queue is full".to_owned()),
            Err(_) => Err(format!("the store write took over {ANSWER_WITHIN:?}")),
        };
        let published = match self.published {
            Err(NotQueued) => Err("the control plane's queue is full".to_owned()),
            Ok(answer) => match tokio::time::timeout(ANSWER_WITHIN, answer).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(_)) => Err("the control plane stopped".to_owned()),
                Err(_) => Err(format!(
                    "no answer from the control plane in {ANSWER_WITHIN:?}"
                )),
            },
        };
        Outcome { stored, published }.response(name)
    }
}

/// What came of each part of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The store write, or why it failed.
    pub stored: Result<(), String>,
    /// The publish, or why it failed.
    pub published: Result<(), String>,
}

/// How a warning line of a [`Response::Done`] starts; `weft revoke` prints
/// such lines on stderr.
pub const WARNING: &str = "warning: ";

impl Outcome {
    /// The admin answer for the revocation of `name`: an error only if it
    /// was neither stored nor published; otherwise done, with a warning
    /// line (starting with [`WARNING`]) for a part that failed. Logged
    /// here too, at INFO or WARN.
    pub fn response(&self, name: &str) -> Response {
        match (&self.stored, &self.published) {
            (Ok(()), Ok(())) => {
                info!(member = %name, "revocation stored and published");
                Response::Done(format!("revoked {name}; the mesh drops it within seconds"))
            }
            (Ok(()), Err(e)) => {
                warn!(member = %name, error = %e, "revocation stored but not published");
                Response::Done(format!(
                    "revoked {name} and stored the revocation; members learn it when they \
                     next connect to this node\n{WARNING}the revocation was not published: {e}"
                ))
            }
            (Err(e), Ok(())) => {
                warn!(member = %name, error = %e, "revocation published but not stored");
                Response::Done(format!(
                    "revoked {name}; the mesh drops it within seconds\n{WARNING}the \
                     revocation was not stored on this node: {e}; members that received it \
                     give it back when they connect, or run weft revoke again"
                ))
            }
            (Err(s), Err(p)) => {
                warn!(member = %name, store = %s, publish = %p, "revocation neither stored nor published");
                Response::Error(format!(
                    "the revocation of {name} was neither stored nor published \
                     (store: {s}; publish: {p}); this node dropped {name} until it restarts: \
                     run weft revoke again"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stored: bool, published: bool) -> Outcome {
        Outcome {
            stored: if stored {
                Ok(())
            } else {
                Err("disk full".into())
            },
            published: if published {
                Ok(())
            } else {
                Err("no member to publish to".into())
            },
        }
    }

    fn done(r: Response) -> String {
        match r {
            Response::Done(text) => text,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn a_revocation_stored_and_published_is_done_without_a_warning() {
        assert!(!done(outcome(true, true).response("m3")).contains(WARNING));
    }

    #[test]
    fn a_revocation_stored_but_not_published_is_done_with_a_warning_naming_the_publish() {
        let text = done(outcome(true, false).response("m3"));
        let warning = text.lines().find(|l| l.starts_with(WARNING)).unwrap();
        assert!(
            warning.contains("not published: no member to publish to"),
            "{text}"
        );
    }

    #[test]
    fn a_revocation_published_but_not_stored_is_done_with_a_warning_naming_the_store() {
        let text = done(outcome(false, true).response("m3"));
        let warning = text.lines().find(|l| l.starts_with(WARNING)).unwrap();
        assert!(
            warning.contains("not stored on this node: disk full"),
            "{text}"
        );
    }

    #[test]
    fn a_revocation_neither_stored_nor_published_is_an_error_naming_both() {
        match outcome(false, false).response("m3") {
            Response::Error(e) => {
                assert!(e.contains("disk full") && e.contains("no member"), "{e}")
            }
            other => panic!("not an error: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_store_write_dropped_unanswered_and_a_publish_answered_is_done_with_a_warning() {
        let (stored_tx, stored) = oneshot::channel();
        drop(stored_tx);
        let (published_tx, published) = oneshot::channel();
        published_tx.send(Ok(())).unwrap();
        let text = done(
            Pending {
                stored,
                published: Ok(published),
            }
            .answer("m3")
            .await,
        );
        assert!(text.contains("store writer's queue is full"), "{text}");
    }

    #[tokio::test]
    async fn a_publish_not_queued_and_a_store_write_that_failed_is_an_error() {
        let (stored_tx, stored) = oneshot::channel();
        stored_tx.send(Err(anyhow::anyhow!("disk full"))).unwrap();
        let response = Pending {
            stored,
            published: Err(NotQueued),
        }
        .answer("m3")
        .await;
        assert!(matches!(response, Response::Error(e) if e.contains("queue is full")));
    }
}
