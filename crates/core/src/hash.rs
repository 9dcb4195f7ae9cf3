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

    /// Every hash that reaches serialized state, pinned: IP hashes live in the distinct-source
    /// and top-source sketches, device-name hashes in the device table and the duplicate keys
    /// (`combine` of name hash, time and `mix64` of the report id). A change here silently
    /// breaks merging with state written before it, so these values must never change.
    #[test]
    fn stable_values() {
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 6_238_072_747_940_578_789);
        assert_eq!(mix64(u64::MAX), 13_029_008_266_876_403_067);
        assert_eq!(hash_ip(Ip::v4([1, 2, 3, 4])), 14_582_178_654_216_825_578);
        let v6 = Ip::parse(b"2001:db8::1").unwrap();
        assert_eq!(hash_ip(v6), 5_519_345_828_414_429_086);
        assert_eq!(hash_bytes(b"web01.contoso.com"), 6_377_200_232_678_750_444);
        assert_eq!(hash_bytes(b""), 17_665_956_581_633_026_203);
        assert_eq!(combine(1, 2), 4_128_717_301_478_392_468);
        assert_eq!(combine(0, 0), 10_749_833_864_783_185_041);
        assert_ne!(combine(1, 2), combine(2, 1), "order matters");
    }
}
