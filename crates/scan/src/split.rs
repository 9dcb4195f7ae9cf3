//! Finding where a line ends, and noting its `{` and `[` on the way.
//!
//! Every byte of the input passes through here once, so this is a vector loop: with AVX2
//! (checked at run time) 64 bytes are tested per step for `\n` and for `{`/`[` (which differ only
//! in bit 0x20, so one compare finds both); elsewhere `memchr3` does the same, stopping at each
//! brace.
//!
//! The same pass notes whether the line holds a byte the fast scanner cannot vouch for: one
//! outside printable ASCII (a UTF-8 sequence, maybe a broken one) or a control character (never
//! valid inside a JSON string) other than the `\r` of a CRLF line end. The scanner reads only
//! some columns, so such a byte in a column it skips would otherwise go unseen, while the general
//! parser rejects the row; a line with one is checked whole before the scanner takes it.

#![allow(unsafe_code)]

use crate::row::Openers;

/// Offset of the first `\n` at or after `from` in `data`, recording in `openers` every `{`/`[`
/// from `from` up to it (as offsets from `base`), and whether a byte below 0x20 or above 0x7f
/// comes before it (other than a `\r` right before it). `None` when there is no newline.
#[inline]
pub(crate) fn line_end(
    data: &[u8],
    from: usize,
    base: usize,
    openers: &mut Openers,
) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor supports AVX2 (checked just above).
        return unsafe { avx2::line_end(data, from, base, openers) };
    }
    line_end_memchr(data, from, base, openers)
}

fn line_end_memchr(data: &[u8], from: usize, base: usize, openers: &mut Openers) -> Option<usize> {
    let mut i = from;
    let end = loop {
        let Some(p) = data
            .get(i..)
            .and_then(|rest| memchr::memchr3(b'\n', b'{', b'[', rest))
        else {
            break None;
        };
        let p = i + p;
        if data[p] == b'\n' {
            break Some(p);
        }
        openers.push(p - base);
        i = p + 1;
    };
    let line = &data[from.min(data.len())..end.unwrap_or(data.len())];
    if odd_bytes(line) {
        openers.odd = true;
    }
    end
}

/// Whether a line noted odd may still go to the scanner: valid UTF-8 and no control character
/// (`line` without its line end). Otherwise the general parser decides, as it would alone.
pub(crate) fn plain_text(line: &[u8]) -> bool {
    !line.iter().any(|&b| b < 0x20) && std::str::from_utf8(line).is_ok()
}

/// Whether `line` (without its `\n`) has a byte below 0x20 or above 0x7f, a `\r` at its very
/// end aside.
pub(crate) fn odd_bytes(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.iter().any(|&b| !(0x20..0x80).contains(&b))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8,
    };

    use super::{Openers, line_end_memchr};

    /// [`super::line_end`] 64 bytes at a time.
    ///
    /// # Safety
    /// The processor must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn line_end(
        data: &[u8],
        from: usize,
        base: usize,
        openers: &mut Openers,
    ) -> Option<usize> {
        let nl = _mm256_set1_epi8(b'\n' as i8);
        let case = _mm256_set1_epi8(0x20);
        let brace = _mm256_set1_epi8(b'{' as i8);
        let space = _mm256_set1_epi8(0x20);
        let cr = _mm256_set1_epi8(b'\r' as i8);
        let mut i = from;
        // A `\r` ended the previous block: fine only if the line ends right after it.
        let mut pending_cr = false;
        while let Some(block) = data.get(i..i + 64) {
            // SAFETY: `block` is 64 readable bytes, read as two unaligned 32-byte loads.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()),
                    _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>()),
                )
            };
            let mask = |v| _mm256_movemask_epi8(v) as u32 as u64;
            let newlines = mask(_mm256_cmpeq_epi8(a, nl)) | mask(_mm256_cmpeq_epi8(b, nl)) << 32;
            let braces = mask(_mm256_cmpeq_epi8(_mm256_or_si256(a, case), brace))
                | mask(_mm256_cmpeq_epi8(_mm256_or_si256(b, case), brace)) << 32;
            // Signed: bytes above 0x7f are negative, so one compare finds them and the
            // control characters (the newline among them).
            let low = mask(_mm256_cmpgt_epi8(space, a)) | mask(_mm256_cmpgt_epi8(space, b)) << 32;
            let odd = low & !newlines;
            if odd != 0 || pending_cr {
                let crs = mask(_mm256_cmpeq_epi8(a, cr)) | mask(_mm256_cmpeq_epi8(b, cr)) << 32;
                let first_nl = newlines & newlines.wrapping_neg();
                let before = first_nl.wrapping_sub(1) & !first_nl;
                let upto = if newlines == 0 { u64::MAX } else { before };
                // The one `\r` allowed: right before the newline, or last in a block
                // without one (then the next block must start with the newline).
                let allowed = if newlines == 0 {
                    crs & (1 << 63)
                } else {
                    crs & (first_nl >> 1)
                };
                if odd & upto & !allowed != 0 || (pending_cr && first_nl != 1) {
                    openers.odd = true;
                }
                pending_cr = newlines == 0 && allowed != 0;
            }
            if newlines | braces != 0 {
                // Braces up to the first newline belong to this line.
                let mut before = match newlines {
                    0 => braces,
                    n => braces & (n - 1),
                };
                while before != 0 {
                    openers.push(i + before.trailing_zeros() as usize - base);
                    before &= before - 1;
                }
                if newlines != 0 {
                    return Some(i + newlines.trailing_zeros() as usize);
                }
            }
            i += 64;
        }
        let end = line_end_memchr(data, i, base, openers);
        // The pending `\r` was the line's last byte if the line ends right after it.
        if pending_cr && end != Some(i) && !(end.is_none() && i == data.len()) {
            openers.odd = true;
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(data: &[u8], from: usize, base: usize) -> (Option<usize>, Openers) {
        let mut o = Openers::default();
        let end = data
            .iter()
            .skip(from)
            .position(|&c| c == b'\n')
            .map(|k| k + from);
        let line = &data[from..end.unwrap_or(data.len())];
        for (k, &c) in line.iter().enumerate() {
            if c == b'{' || c == b'[' {
                o.push(k + from - base);
            }
            let cr_at_end = c == b'\r' && k + 1 == line.len();
            if !(0x20..0x80).contains(&c) && !cr_at_end {
                o.odd = true;
            }
        }
        (end, o)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn agrees_with_a_byte_loop(
            data in proptest::collection::vec(prop_oneof![
                40 => Just(b'a'), 2 => Just(b'\n'), 2 => Just(b'{'), 2 => Just(b'['),
                2 => Just(b'{' | 0x20), 2 => Just(b'\n' | 0x20), 2 => Just(b'\r'),
                1 => Just(b'\t'), 1 => Just(0xc3), 1 => any::<u8>(),
            ], 0..400),
            from in 0usize..50,
        ) {
            let from = from.min(data.len());
            let base = from / 2;
            let (want, want_openers) = reference(&data, from, base);
            let mut o = Openers::default();
            prop_assert_eq!(line_end(&data, from, base, &mut o), want);
            prop_assert_eq!(o, want_openers);
            let mut o = Openers::default();
            prop_assert_eq!(line_end_memchr(&data, from, base, &mut o), want);
            prop_assert_eq!(o, want_openers);
        }
    }
}
