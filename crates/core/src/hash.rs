//! Fixed, seedless 64-bit hashes. Sketches compare hashes made on different threads, runs and
//! (later) machines, so the function must never change with a random seed or a platform.

use crate::model::Ip;

/// SplitMix64's finalizer: a bijection on u64 with full avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of an IP address (uniform over u64; used by the distinct-source sketches).
#[inline]
pub fn hash_ip(ip: Ip) -> u64 {
    let hi = (ip.0 >> 64) as u64;
    let lo = ip.0 as u64;
    mix64(lo ^ mix64(hi ^ 0x9e37_79b9_7f4a_7c15))
}

/// Hash of a byte string (FNV-1a, then mixed): device names, once per name, not per record.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= c as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Combines hashes in order.
#[inline]
pub fn combine(a: u64, b: u64) -> u64 {
    mix64(a ^ b.rotate_left(23) ^ 0x2545_f491_4f6c_dd1d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // These values are part of the serialized format of every sketch: they must not change.
        assert_eq!(mix64(0), 0);
        assert_eq!(
            hash_bytes(b"web01.contoso.com"),
            hash_bytes(b"web01.contoso.com")
        );
        assert_ne!(
            hash_ip(Ip::v4([10, 0, 0, 1])),
            hash_ip(Ip::v4([10, 0, 0, 2]))
        );
        assert_eq!(
            hash_ip(Ip::v4([1, 2, 3, 4])),
            14_582_178_654_216_825_578_u64,
            "hash changed"
        );
    }
}
