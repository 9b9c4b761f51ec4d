//! CRC-32 (ISO HDLC, the one zlib and FINGERPRINT use) by slicing-by-8 on tables computed at
//! compile time, and the FINGERPRINT check of a Send indication (RFC 8489 §14.7) over a
//! [`Words`] reader.

#[cfg(doc)]
use super::SendIndication;
use super::{CRC32_INIT, FINGERPRINT_XOR, Fingerprint, MAX_CRC_BLOCKS, Refusal, Words};

/// The slicing-by-8 tables of the reflected CRC-32 polynomial 0xEDB88320: `T[0]` is the
/// byte-at-a-time table, `T[k][i]` the CRC of byte `i` followed by `k` zero bytes.
pub const fn crc32_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

/// [`crc32_tables`], computed at compile time: 8 KiB of read-only data (in the program, its
/// `.rodata`, which the loader makes a frozen array map).
pub static CRC32_TABLES: [[u32; 256]; 8] = crc32_tables();

/// Entry `i` of table `k`. Indexing with a `u8` cannot go out of bounds, so no bounds check
/// (and no panic) is emitted.
#[inline(always)]
const fn t(k: usize, i: u8) -> u32 {
    CRC32_TABLES[k & 7][i as usize]
}

/// Runs the CRC register (start from [`CRC32_INIT`]) over 8 bytes.
#[inline(always)]
pub const fn crc32_update8(crc: u32, block: [u8; 8]) -> u32 {
    let c = crc ^ u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    t(7, c as u8)
        ^ t(6, (c >> 8) as u8)
        ^ t(5, (c >> 16) as u8)
        ^ t(4, (c >> 24) as u8)
        ^ t(3, block[4])
        ^ t(2, block[5])
        ^ t(1, block[6])
        ^ t(0, block[7])
}

/// Runs the CRC register over 4 bytes (a message's length is a multiple of 4, so after its
/// 8-byte blocks at most one of these is left).
#[inline(always)]
pub const fn crc32_update4(crc: u32, word: [u8; 4]) -> u32 {
    let c = crc ^ u32::from_le_bytes(word);
    t(3, c as u8) ^ t(2, (c >> 8) as u8) ^ t(1, (c >> 16) as u8) ^ t(0, (c >> 24) as u8)
}

/// Runs the CRC register over one byte.
#[inline(always)]
pub const fn crc32_update_byte(crc: u32, byte: u8) -> u32 {
    t(0, (crc as u8) ^ byte) ^ (crc >> 8)
}

/// The CRC-32 a register stands for (its complement).
#[inline(always)]
pub const fn crc32_finish(crc: u32) -> u32 {
    !crc
}

/// The FINGERPRINT value of a message whose bytes up to the FINGERPRINT attribute ran through
/// the register `crc`.
#[inline(always)]
pub const fn fingerprint_value(crc: u32) -> u32 {
    crc32_finish(crc) ^ FINGERPRINT_XOR
}

/// The CRC-32 of `bytes`, in full. For tests and userspace; the program runs the update
/// functions over packet memory (slices index with a panic path the verifier refuses).
pub const fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = CRC32_INIT;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        crc = crc32_update8(
            crc,
            [
                bytes[i],
                bytes[i + 1],
                bytes[i + 2],
                bytes[i + 3],
                bytes[i + 4],
                bytes[i + 5],
                bytes[i + 6],
                bytes[i + 7],
            ],
        );
        i += 8;
    }
    while i < bytes.len() {
        crc = crc32_update_byte(crc, bytes[i]);
        i += 1;
    }
    crc32_finish(crc)
}

// The check value of CRC-32 (the CRC of "123456789"), at compile time.
const _: () = assert!(crc32(b"123456789") == 0xCBF4_3926);

/// Checks a Send indication's FINGERPRINT ([`SendIndication::fingerprint`]): the CRC of the
/// bytes before it (the header's length field as received: FINGERPRINT is last, so the length
/// covers it, as RFC 8489 §14.7 computes it), read through `words` as 8-byte blocks and a last
/// 4 bytes. The loop's bound is [`MAX_CRC_BLOCKS`], and it runs `fp.offset / 8` times.
#[inline(always)]
pub fn check_fingerprint<W: Words + ?Sized>(words: &W, fp: Fingerprint) -> Result<(), Refusal> {
    let len = fp.offset as usize;
    let blocks = len / 8;
    if blocks > MAX_CRC_BLOCKS {
        return Err(Refusal::TooLong);
    }
    let mut crc = CRC32_INIT;
    let mut i = 0;
    while i < MAX_CRC_BLOCKS {
        if i >= blocks {
            break;
        }
        let (Some(a), Some(b)) = (words.word(8 * i), words.word(8 * i + 4)) else {
            return Err(Refusal::Truncated);
        };
        crc = crc32_update8(crc, [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]);
        i += 1;
    }
    if len % 8 == 4 {
        let Some(w) = words.word(len - 4) else {
            return Err(Refusal::Truncated);
        };
        crc = crc32_update4(crc, w);
    }
    if fingerprint_value(crc) == fp.value {
        Ok(())
    } else {
        Err(Refusal::BadFingerprint)
    }
}
