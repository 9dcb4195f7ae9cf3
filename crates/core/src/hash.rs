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

/// The inverse of a multiplication by odd `c` modulo 2^64 (Newton's iteration: each step
/// doubles the correct low bits, 3 of which an odd number's own inverse starts with).
const fn mul_inverse(c: u64) -> u64 {
    let mut x = c;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// The inverse of [`mix64`]: `unmix64(mix64(z)) == z` for every `z`.
#[inline]
pub fn unmix64(mut z: u64) -> u64 {
    const INV1: u64 = mul_inverse(0xbf58_476d_1ce4_e5b9);
    const INV2: u64 = mul_inverse(0x94d0_49bb_1331_11eb);
    z ^= (z >> 31) ^ (z >> 62);
    z = z.wrapping_mul(INV2);
    z ^= (z >> 27) ^ (z >> 54);
    z = z.wrapping_mul(INV1);
    z ^ (z >> 30) ^ (z >> 60)
}

/// The IPv4 address whose [`hash_ip`] is `h`, if one is: for IPv4 (high word 0) the hash is a
/// bijection of the low word, so a distinct-source sample, which keeps hashes only, still names
/// its IPv4 sources. A hash of an IPv6 address reads as IPv4 with odds of 2^-32; `None` for the
/// rest of them.
pub fn ipv4_of_hash(h: u64) -> Option<Ip> {
    let lo = unmix64(h) ^ mix64(0x9e37_79b9_7f4a_7c15);
    let ip = Ip(lo as u128);
    ip.is_v4().then_some(ip)
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

    proptest::proptest! {
        #[test]
        fn unmix_inverts_mix(z in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(unmix64(mix64(z)), z);
        }

        /// Every IPv4 address comes back from its hash; IPv6 addresses do not read as IPv4.
        #[test]
        fn ipv4_comes_back_from_its_hash(a in proptest::prelude::any::<[u8; 4]>(), hi in 1u64.., lo in proptest::prelude::any::<u64>()) {
            let ip = Ip::v4(a);
            proptest::prop_assert_eq!(ipv4_of_hash(hash_ip(ip)), Some(ip));
            let v6 = Ip(((hi as u128) << 64) | lo as u128);
            proptest::prop_assert_eq!(ipv4_of_hash(hash_ip(v6)), None);
        }
    }
}
