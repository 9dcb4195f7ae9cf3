//! Finding where a line ends, and noting its `{` and `[` on the way.
//!
//! Every byte of the input passes through here once, so this is a vector loop: with AVX2
//! (checked at run time) 64 bytes are tested per step for `\n` and for `{`/`[` (which differ only
//! in bit 0x20, so one compare finds both); elsewhere `memchr3` does the same, stopping at each
//! brace.

#![allow(unsafe_code)]

use crate::row::Openers;

/// Offset of the first `\n` at or after `from` in `data`, recording in `openers` every `{`/`[`
/// from `from` up to it (as offsets from `base`). `None` when there is no newline.
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

fn line_end_memchr(data: &[u8], mut i: usize, base: usize, openers: &mut Openers) -> Option<usize> {
    loop {
        let p = i + memchr::memchr3(b'\n', b'{', b'[', data.get(i..)?)?;
        if data[p] == b'\n' {
            return Some(p);
        }
        openers.push(p - base);
        i = p + 1;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
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
        let mut i = from;
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
        line_end_memchr(data, i, base, openers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(data: &[u8], from: usize, base: usize) -> (Option<usize>, Openers) {
        let mut o = Openers::default();
        for (k, &c) in data.iter().enumerate().skip(from) {
            match c {
                b'\n' => return (Some(k), o),
                b'{' | b'[' => o.push(k - base),
                _ => {}
            }
        }
        (None, o)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn agrees_with_a_byte_loop(
            data in proptest::collection::vec(prop_oneof![
                20 => Just(b'a'), 1 => Just(b'\n'), 1 => Just(b'{'), 1 => Just(b'['),
                1 => Just(b'{' | 0x20), 1 => Just(b'\n' | 0x20), 1 => any::<u8>(),
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
