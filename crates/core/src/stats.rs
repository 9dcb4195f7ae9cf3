//! Mergeable running statistics.

use serde::{Deserialize, Serialize};

/// Count, mean and sum of squared deviations (Welford), merged with Chan et al.'s formula, so
/// partial moments computed apart combine into the moments of the whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n as f64 / n as f64;
        self.m2 += o.m2 + d * d * (self.n as f64) * (o.n as f64) / n as f64;
        self.n = n;
    }

    /// Sample standard deviation (n-1), as KQL's `stdev()`; `None` below two values.
    pub fn sample_stdev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2.max(0.0) / (self.n - 1) as f64).sqrt())
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n >= 1).then_some(self.mean)
    }
}

impl FromIterator<f64> for Moments {
    fn from_iter<I: IntoIterator<Item = f64>>(it: I) -> Self {
        let mut m = Moments::default();
        for x in it {
            m.push(x);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sample_stdev_like_kql() {
        let m: Moments = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
            .into_iter()
            .collect();
        assert_eq!(m.mean(), Some(5.0));
        assert!((m.sample_stdev().unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        let one: Moments = [3.0].into_iter().collect();
        assert_eq!(one.sample_stdev(), None);
    }

    proptest! {
        #[test]
        fn merge_equals_one_shot(xs in proptest::collection::vec(0f64..1e6, 0..200), cut in 0usize..200) {
            let cut = cut.min(xs.len());
            let whole: Moments = xs.iter().copied().collect();
            let mut a: Moments = xs[..cut].iter().copied().collect();
            let b: Moments = xs[cut..].iter().copied().collect();
            a.merge(&b);
            prop_assert_eq!(a.n, whole.n);
            prop_assert!((a.mean - whole.mean).abs() <= 1e-9 * whole.mean.abs().max(1.0));
            prop_assert!((a.m2 - whole.m2).abs() <= 1e-6 * whole.m2.abs().max(1.0));
        }
    }
}
