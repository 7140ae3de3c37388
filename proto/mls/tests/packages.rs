//! Key packages made in a batch: any of them (and the last-resort one, more than once) lets
//! its device join from a Welcome.

mod common;

use common::*;

#[test]
fn any_package_of_a_batch_welcomes_its_device() {
    for pick in [0, 2, 3] {
        let mut alice = account("alice").device(1);
        let mut bob = account("bob").device(1);
        let mut ds = Ds::create(&mut alice, gid(40 + pick as u8), "batch");
        let batch = bob.key_packages(3, true).unwrap();
        let package = batch[pick].1.clone();
        let checked = alice.check_key_packages(&[package], keys).unwrap();
        let out = alice.add(&ds.id, checked).unwrap();
        commit(&mut ds, &mut alice, &out);
        let joined = bob.join(out.welcome.as_deref().unwrap(), keys).unwrap();
        assert_eq!(joined, Ok(ds.id), "package {pick}");
    }
}
