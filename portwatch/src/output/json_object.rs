//! Writing a JSON object field by field into a line buffer, without building a
//! value first: the JSON printer's hot path.
use std::io;

use serde::Serialize;

/// Fields of a JSON object written into a line; keys are this program's own ASCII
/// names, values go through serde_json. The first error is kept for `close`.
pub struct Object<'l> {
    pub out: &'l mut Vec<u8>,
    empty: bool,
    error: Option<serde_json::Error>,
}

impl<'l> Object<'l> {
    pub fn open(out: &'l mut Vec<u8>) -> Self {
        out.push(b'{');
        Object {
            out,
            empty: true,
            error: None,
        }
    }

    /// Fields after one the caller has begun: the next thing written is a value.
    pub fn continued(out: &'l mut Vec<u8>) -> Self {
        Object {
            out,
            empty: false,
            error: None,
        }
    }

    pub fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn value<T: Serialize + ?Sized>(&mut self, value: &T) {
        if let Err(e) = serde_json::to_writer(&mut *self.out, value) {
            self.error.get_or_insert(e);
        }
    }

    pub fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.key(key);
        self.value(value);
    }

    /// A string of this program's own (a state or role name): nothing to escape.
    pub fn name(&mut self, key: &str, name: &'static str) {
        debug_assert!(!name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20));
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'"');
    }

    /// The fields are written; the object is left open.
    pub fn done(self) -> io::Result<()> {
        match self.error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    pub fn close(self) -> io::Result<()> {
        self.out.push(b'}');
        self.done()
    }
}
