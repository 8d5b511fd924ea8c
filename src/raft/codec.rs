//! A small, explicit binary codec for the Raft layer's typed values.
//!
//! Integers are little-endian and fixed-width; byte strings and strings carry a `u32` length;
//! `Option` carries a one-byte tag. Decoding checks every length against the input before
//! slicing or allocating, so bad input gives a [`CodecError`], never a panic.

use std::fmt;

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

fn short(what: &str, need: usize, have: usize) -> CodecError {
    CodecError(format!("{what}: need {need} bytes, have {have}"))
}

/// A value that can be written to and read back from bytes.
pub trait Codec: Sized {
    /// Appends the encoding of `self` to `buf`.
    fn encode(&self, buf: &mut Vec<u8>);

    /// Decodes a value from the front of `bytes`, returning it and the number of bytes used.
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError>;

    /// Encodes into a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a value that must use all of `bytes`.
    fn from_bytes(bytes: &[u8]) -> Result<Self, CodecError> {
        let (v, n) = Self::decode(bytes)?;
        if n != bytes.len() {
            return Err(CodecError(format!(
                "{} trailing bytes after the value",
                bytes.len() - n
            )));
        }
        Ok(v)
    }
}

macro_rules! int_codec {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            fn encode(&self, buf: &mut Vec<u8>) {
                buf.extend_from_slice(&self.to_le_bytes());
            }
            fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
                const N: usize = std::mem::size_of::<$t>();
                let Some(head) = bytes.first_chunk::<N>() else {
                    return Err(short(stringify!($t), N, bytes.len()));
                };
                Ok((<$t>::from_le_bytes(*head), N))
            }
        }
    )*};
}

int_codec!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

impl Codec for bool {
    fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(*self as u8);
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        match bytes.first() {
            Some(0) => Ok((false, 1)),
            Some(1) => Ok((true, 1)),
            Some(b) => Err(CodecError(format!("bool: invalid byte {b}"))),
            None => Err(short("bool", 1, 0)),
        }
    }
}

impl Codec for () {
    fn encode(&self, _buf: &mut Vec<u8>) {}
    fn decode(_bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        Ok(((), 0))
    }
}

fn decode_len(bytes: &[u8], what: &str) -> Result<(usize, usize), CodecError> {
    let (len, n) = u32::decode(bytes)?;
    let len = len as usize;
    if bytes.len() - n < len {
        return Err(short(what, len, bytes.len() - n));
    }
    Ok((len, n))
}

impl Codec for Vec<u8> {
    fn encode(&self, buf: &mut Vec<u8>) {
        (self.len() as u32).encode(buf);
        buf.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let (len, n) = decode_len(bytes, "bytes")?;
        Ok((bytes[n..n + len].to_vec(), n + len))
    }
}

impl Codec for String {
    fn encode(&self, buf: &mut Vec<u8>) {
        (self.len() as u32).encode(buf);
        buf.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        let (len, n) = decode_len(bytes, "string")?;
        let s = std::str::from_utf8(&bytes[n..n + len])
            .map_err(|e| CodecError(format!("string: {e}")))?;
        Ok((s.to_string(), n + len))
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            None => buf.push(0),
            Some(v) => {
                buf.push(1);
                v.encode(buf);
            }
        }
    }
    fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
        match bytes.first() {
            Some(0) => Ok((None, 1)),
            Some(1) => {
                let (v, n) = T::decode(&bytes[1..])?;
                Ok((Some(v), n + 1))
            }
            Some(b) => Err(CodecError(format!("option: invalid tag {b}"))),
            None => Err(short("option", 1, 0)),
        }
    }
}

macro_rules! tuple_codec {
    ($($name:ident),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, buf: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode(buf);)+
            }
            #[allow(non_snake_case)]
            fn decode(bytes: &[u8]) -> Result<(Self, usize), CodecError> {
                let mut used = 0;
                $(
                    let ($name, n) = $name::decode(&bytes[used..])?;
                    used += n;
                )+
                Ok((($($name,)+), used))
            }
        }
    };
}

tuple_codec!(A);
tuple_codec!(A, B);
tuple_codec!(A, B, C);
tuple_codec!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt<T: Codec + PartialEq + std::fmt::Debug>(v: T) {
        let b = v.to_bytes();
        assert_eq!(T::from_bytes(&b).unwrap(), v);
        for cut in 0..b.len() {
            // Every strict prefix either fails or decodes a value that does not use all bytes.
            if let Ok((_, n)) = T::decode(&b[..cut]) {
                assert!(n <= cut);
            }
        }
    }

    #[test]
    fn round_trips() {
        rt(0u8);
        rt(u64::MAX);
        rt(-5i64);
        rt(true);
        rt(());
        rt(b"abc".to_vec());
        rt("héllo".to_string());
        rt(Some(7u32));
        rt(None::<u32>);
        rt((1u64, 2u64, 3u64));
        rt((Some(1u64), b"x".to_vec()));
    }

    #[test]
    fn errors_are_clear() {
        let e = u64::from_bytes(&[1, 2]).unwrap_err();
        assert!(e.0.contains("need 8"), "{e}");
        let e = Vec::<u8>::from_bytes(&[255, 255, 255, 255, 1]).unwrap_err();
        assert!(e.0.contains("bytes"), "{e}");
        assert!(bool::from_bytes(&[2]).is_err());
        assert!(Option::<u8>::from_bytes(&[9]).is_err());
        assert!(u8::from_bytes(&[1, 2]).unwrap_err().0.contains("trailing"));
        assert!(String::from_bytes(&[1, 0, 0, 0, 0xff]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = <(u64, Option<Vec<u8>>, String)>::decode(&bytes);
            let _ = <(bool, i32)>::from_bytes(&bytes);
        }
    }
}
