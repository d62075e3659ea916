//! The CFG scope as users write it, and the guidance masks a vocabulary gives each scope.

#![allow(clippy::unwrap_used)]

use model::sampling::CfgScope;
use tch::Device;
use testkit::vocabulary;

#[test]
fn scopes_parse_and_print_as_written() {
    for (text, scope) in [("all", CfgScope::All), ("content", CfgScope::Content)] {
        assert_eq!(text.parse::<CfgScope>().unwrap(), scope);
        assert_eq!(scope.to_string(), text);
    }
    let e = "rhythm".parse::<CfgScope>().unwrap_err();
    assert!(e.contains("rhythm") && e.contains("all or content"), "{e}");
}

#[test]
fn content_scope_masks_are_the_vocabularys_groups() {
    let v = vocabulary();
    assert!(v.guidance_groups(CfgScope::All, Device::Cpu).is_empty());
    let masks = v.guidance_groups(CfgScope::Content, Device::Cpu);
    assert_eq!(masks.len(), v.content_groups.len());
    for (m, group) in masks.iter().zip(&v.content_groups) {
        let m = Vec::<bool>::try_from(m).unwrap();
        assert_eq!(m.len(), v.allowed.len());
        let on: Vec<usize> = (0..m.len()).filter(|&i| m[i]).collect();
        assert_eq!(&on, group);
    }
}
