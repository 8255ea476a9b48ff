//! A bounded, uniform sample of a stream (Vitter's algorithm R), kept fresh: the count the
//! replacement probability uses is capped, so recent traffic keeps entering.

use rand::Rng;

#[derive(Clone, Debug)]
pub struct Reservoir<T> {
    items: Vec<T>,
    cap: usize,
    seen: u64,
}

impl<T> Reservoir<T> {
    pub fn new(cap: usize) -> Reservoir<T> {
        Reservoir {
            items: Vec::with_capacity(cap.min(1024)),
            cap: cap.max(1),
            seen: 0,
        }
    }

    pub fn push(&mut self, item: T, rng: &mut impl Rng) {
        self.seen = (self.seen + 1).min(8 * self.cap as u64);
        if self.items.len() < self.cap {
            self.items.push(item);
            return;
        }
        let j = rng.random_range(0..self.seen);
        if (j as usize) < self.cap {
            self.items[j as usize] = item;
        }
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_holds_at_most_its_capacity_and_keeps_taking_new_items() {
        let mut rng = rand::rng();
        let mut r = Reservoir::new(100);
        for i in 0..10_000u32 {
            r.push(i, &mut rng);
        }
        assert_eq!(r.len(), 100);
        // The capped count keeps the chance of entering at >= 1/8: the last thousand items
        // are well represented.
        let recent = r.items().iter().filter(|&&i| i >= 9_000).count();
        assert!(recent >= 30, "only {recent} of the last 1000 items");
    }
}
