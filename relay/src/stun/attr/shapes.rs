//! The value shapes many attributes share, one macro each: UTF-8 text with a length bound,
//! opaque bytes, fixed-size byte arrays, big-endian integers and empty flags. Each macro writes
//! the attribute's type and its [`Attr`](super::Attr) implementation; the families' modules
//! invoke them.

macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> $name<'a> {
            /// Longest value accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            pub fn as_str(&self) -> &'a str {
                self.0
            }
        }

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                if value.len() > Self::MAX_LEN {
                    return Err(AttrError::TooLong { attr: Self::TYPE, max: Self::MAX_LEN });
                }
                std::str::from_utf8(value).map($name).map_err(|_| AttrError::NotUtf8 { attr: Self::TYPE })
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0.as_bytes());
            }
            fn check_encodable(&self) -> Result<(), AttrError> {
                if self.0.len() > Self::MAX_LEN {
                    return Err(AttrError::TooLong { attr: Self::TYPE, max: Self::MAX_LEN });
                }
                Ok(())
            }
        }
    };
}

macro_rules! bytes_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                Ok($name(value))
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(self.0);
            }
        }
    };
}

macro_rules! array_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $n:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub [u8; $n]);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let arr = <[u8; $n]>::try_from(value).map_err(|_| AttrError::BadLength {
                    attr: Self::TYPE,
                    got: value.len(),
                    expected: $expected,
                })?;
                Ok($name(arr))
            }
            fn value_len(&self) -> usize {
                $n
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&self.0);
            }
        }
    };
}

macro_rules! int_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $int:ty, $n:literal, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub $int);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                let arr = <[u8; $n]>::try_from(value).map_err(|_| AttrError::BadLength {
                    attr: Self::TYPE,
                    got: value.len(),
                    expected: $expected,
                })?;
                Ok($name(<$int>::from_be_bytes(arr)))
            }
            fn value_len(&self) -> usize {
                $n
            }
            fn encode_value(&self, out: &mut [u8], _: &TransactionId) {
                out.copy_from_slice(&self.0.to_be_bytes());
            }
        }
    };
}

macro_rules! flag_attr {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name;

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = $ty;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, AttrError> {
                expect_len(Self::TYPE, value, 0, "0")?;
                Ok($name)
            }
            fn value_len(&self) -> usize {
                0
            }
            fn encode_value(&self, _: &mut [u8], _: &TransactionId) {}
        }
    };
}
