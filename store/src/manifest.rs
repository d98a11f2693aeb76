//! The state file, `weft-store.state`, kept beside sled's files. It exists
//! because sled 0.34 opens a truncated or overwritten `db` file without an
//! error, as an empty or partial database: on its own, a store that lost
//! its data would look like a fresh one and be silently re-initialised.
//!
//! The file says whether the directory is a weft store and in which state
//! the last run left it:
//!
//! - absent: a missing or empty directory is a new store; anything else is
//!   not a weft store and is refused;
//! - `creating`: initialisation was interrupted before it finished; it is
//!   run again (migrations are idempotent);
//! - `open`: a run is in progress or crashed; the schema version must still
//!   be found in the database;
//! - `closed`: the last run shut down cleanly, and the file lists how many
//!   records each tree held then; since nothing writes to a closed store,
//!   the counts must still match.
//!
//! It is replaced atomically (write a temporary file, fsync, rename, fsync
//! the directory) and only by [`crate::Store`]. It must never be written
//! while the store is refused.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The state file's name inside the store directory.
pub(crate) const FILE_NAME: &str = "weft-store.state";
const TEMP_NAME: &str = "weft-store.state.tmp";
const HEADER: &str = "# weft-store state file: written by weft, do not edit";
const FORMAT: u32 = 1;

/// What the state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Creating,
    Open {
        schema: u32,
    },
    Closed {
        schema: u32,
        counts: BTreeMap<String, u64>,
    },
}

fn corrupt(dir: &Path, reason: String) -> StoreError {
    StoreError::Corrupt {
        path: dir.to_path_buf(),
        reason,
    }
}

fn io_error(path: PathBuf) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io { path, source }
}

/// Reads the state file of the store in `dir`; `None` if there is none.
pub(crate) fn read(dir: &Path) -> Result<Option<State>, StoreError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    let text =
        String::from_utf8(bytes).map_err(|_| corrupt(dir, format!("{FILE_NAME} is not text")))?;
    parse(&text)
        .map(Some)
        .map_err(|why| corrupt(dir, format!("{FILE_NAME} is unreadable: {why}")))
}

pub(crate) fn parse(text: &str) -> Result<State, String> {
    let mut format = None;
    let mut state = None;
    let mut schema = None;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["format", n] => format = Some(number(n)?),
            ["state", s] => state = Some(*s),
            ["schema", n] => schema = Some(number(n)?),
            ["count", tree, n] => {
                if counts.insert((*tree).to_owned(), number(n)?).is_some() {
                    return Err(format!("tree {tree} counted twice"));
                }
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    match format {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => {
            return Err(format!(
                "format {f} is not supported (this build reads {FORMAT})"
            ))
        }
        None => return Err("no format line".into()),
    }
    let schema = schema
        .map(|s| u32::try_from(s).map_err(|_| format!("schema {s} out of range")))
        .transpose()?;
    match (state, schema) {
        (Some("creating"), None) if counts.is_empty() => Ok(State::Creating),
        (Some("open"), Some(schema)) if counts.is_empty() => Ok(State::Open { schema }),
        (Some("closed"), Some(schema)) => Ok(State::Closed { schema, counts }),
        _ => Err("inconsistent state, schema and count lines".into()),
    }
}

fn number(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

pub(crate) fn render(state: &State) -> String {
    let mut out = format!("{HEADER}\nformat {FORMAT}\n");
    match state {
        State::Creating => out.push_str("state creating\n"),
        State::Open { schema } => out.push_str(&format!("state open\nschema {schema}\n")),
        State::Closed { schema, counts } => {
            out.push_str(&format!("state closed\nschema {schema}\n"));
            for (tree, n) in counts {
                out.push_str(&format!("count {tree} {n}\n"));
            }
        }
    }
    out
}

/// Replaces the state file of the store in `dir` durably and atomically.
pub(crate) fn write(dir: &Path, state: &State) -> Result<(), StoreError> {
    let temp = dir.join(TEMP_NAME);
    let mut file = fs::File::create(&temp).map_err(io_error(temp.clone()))?;
    file.write_all(render(state).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(temp.clone()))?;
    drop(file);
    let path = dir.join(FILE_NAME);
    fs::rename(&temp, &path).map_err(io_error(path))?;
    // The rename is durable only once the directory entry is.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir.to_path_buf()))
}

/// Whether `dir` holds nothing but, possibly, a temporary state file left by
/// a crash during the store's very first open.
pub(crate) fn is_empty_dir(dir: &Path) -> Result<bool, StoreError> {
    let entries = fs::read_dir(dir).map_err(io_error(dir.to_path_buf()))?;
    for entry in entries {
        let entry = entry.map_err(io_error(dir.to_path_buf()))?;
        if entry.file_name() != TEMP_NAME {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> State {
        State::Closed {
            schema: 1,
            counts: [("members".to_owned(), 3), ("paths".to_owned(), 0)]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn every_state_round_trips_through_its_text() {
        for state in [State::Creating, State::Open { schema: 7 }, closed()] {
            assert_eq!(parse(&render(&state)), Ok(state));
        }
    }

    #[test]
    fn a_closed_state_lists_its_counts_one_per_line() {
        let text = render(&closed());
        assert!(text.contains("\ncount members 3\n"), "{text}");
    }

    #[test]
    fn junk_is_refused() {
        for junk in [
            "",
            "format 1\n",
            "format 2\nstate open\nschema 1\n",
            "format 1\nstate open\n",
            "format 1\nstate creating\nschema 1\ncount x 1\n",
            "format 1\nstate closed\nschema one\n",
            "format 1\nstate closed\nschema 1\ncount a 1\ncount a 1\n",
            "\u{5a}\u{5a}\u{5a}\u{5a}",
        ] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
    }
}
