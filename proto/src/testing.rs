//! proptest strategies for fields whose types carry invariants (test builds only).

use proptest::prelude::*;

use crate::envelope::WrappedKey;
use crate::ids::UserName;

/// Arbitrary bytes, up to `max` long.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Arbitrary text, up to `max` characters.
pub(crate) fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..=max).prop_map(|c| c.into_iter().collect())
}

/// A vector of arbitrary values.
pub(crate) fn vec_of<T: Arbitrary>(max: usize) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(any::<T>(), 0..=max)
}

/// Valid user names.
pub(crate) fn user_names(max: usize) -> impl Strategy<Value = Vec<UserName>> {
    proptest::collection::vec(any::<UserName>(), 0..=max)
}

/// Wrapped keys for valid names.
pub(crate) fn wrapped_keys(max: usize) -> impl Strategy<Value = Vec<WrappedKey>> {
    proptest::collection::vec(any::<WrappedKey>(), 0..=max)
}

impl Arbitrary for UserName {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        "[a-z][a-z0-9_.-]{2,31}"
            .prop_map(|s| UserName::new(&s).expect("strategy yields valid names"))
            .boxed()
    }
}

impl Arbitrary for crate::ids::GroupName {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        "[A-Za-z0-9 éß]{0,20}[a-z]"
            .prop_map(|s| crate::ids::GroupName::new(&s).expect("strategy yields valid names"))
            .boxed()
    }
}

impl Arbitrary for crate::ids::NodeName {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        "[a-z0-9-]{1,20}"
            .prop_map(|s| crate::ids::NodeName::new(&s).expect("strategy yields valid names"))
            .boxed()
    }
}

macro_rules! arbitrary_bytes_id {
    ($($ty:ty),*) => {$(
        impl Arbitrary for $ty {
            type Parameters = ();
            type Strategy = BoxedStrategy<Self>;
            fn arbitrary_with(_: ()) -> Self::Strategy {
                any::<[u8; <$ty>::LEN]>().prop_map(Self).boxed()
            }
        }
    )*};
}
arbitrary_bytes_id!(crate::ids::MsgId, crate::ids::GroupId, crate::ids::BlobId);

impl Arbitrary for crate::ids::DeviceId {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        any::<u64>().prop_map(Self).boxed()
    }
}

impl Arbitrary for crate::ids::SessionToken {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        any::<[u8; 32]>().prop_map(Self).boxed()
    }
}
