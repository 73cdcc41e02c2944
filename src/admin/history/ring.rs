//! A ring of a fixed number of values: its storage is allocated once, at
//! [`Ring::new`], and a push beyond the capacity overwrites the oldest
//! value, so however long the process runs a ring holds
//! [`Ring::bytes`] and never more.

/// At most `capacity` values, oldest overwritten first.
#[derive(Debug)]
pub struct Ring<T> {
    slots: Box<[T]>,
    /// Where the next value goes.
    next: usize,
    len: usize,
}

impl<T: Copy + Default> Ring<T> {
    /// An empty ring of `capacity` values (at least one).
    pub fn new(capacity: usize) -> Ring<T> {
        Ring {
            slots: vec![T::default(); capacity.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
        }
    }

    /// Adds `value`, overwriting the oldest when full.
    pub fn push(&mut self, value: T) {
        self.slots[self.next] = value;
        self.next = (self.next + 1) % self.slots.len();
        self.len = (self.len + 1).min(self.slots.len());
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The memory its values take, fixed at creation.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        let start = (self.next + self.slots.len() - self.len) % self.slots.len();
        (0..self.len).map(move |i| self.slots[(start + i) % self.slots.len()])
    }

    /// The newest value.
    pub fn last(&self) -> Option<T> {
        (self.len > 0).then(|| self.slots[(self.next + self.slots.len() - 1) % self.slots.len()])
    }

    /// Where its storage is (a test's proof that it never moved).
    #[cfg(test)]
    pub fn storage(&self) -> *const T {
        self.slots.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_values_in_order() {
        let mut ring = Ring::<u32>::new(3);
        assert_eq!(ring.iter().count(), 0);
        assert_eq!(ring.last(), None);
        ring.push(1);
        ring.push(2);
        assert_eq!(ring.iter().collect::<Vec<_>>(), [1, 2]);
        for v in 3..=7 {
            ring.push(v);
        }
        assert_eq!(ring.iter().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(ring.last(), Some(7));
        assert_eq!((ring.len(), ring.capacity(), ring.bytes()), (3, 3, 12));
    }

    #[test]
    fn a_ring_of_zero_holds_one() {
        let mut ring = Ring::<u64>::new(0);
        ring.push(4);
        ring.push(5);
        assert_eq!(ring.iter().collect::<Vec<_>>(), [5]);
    }
}
