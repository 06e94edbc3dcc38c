//! Terraform's hashicorp/aws provider against the appliance: `aws_kms_key` with a key policy,
//! rotation and tags, and an `aws_kms_alias` (tests/terraform/main.tf). Apply, plan (no
//! changes), update the description and the policy, destroy. The provider calls STS
//! GetCallerIdentity first, then CreateKey, GetKeyPolicy, EnableKeyRotation,
//! GetKeyRotationStatus, ListResourceTags, CreateAlias, ListAliases, … and
//! ScheduleKeyDeletion. Skips cleanly when terraform or its offline provider mirror is absent
//! (`EKMS_TF_MIRROR`, default /opt/tf-plugins).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::admin;
use ekms_tests::Appliance;

fn mirror() -> Option<PathBuf> {
    let dir = std::env::var_os("EKMS_TF_MIRROR")
        .map_or_else(|| PathBuf::from("/opt/tf-plugins"), PathBuf::from);
    let have_terraform = Command::new("terraform")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have_provider = dir.join("registry.terraform.io/hashicorp/aws").is_dir();
    if have_terraform && have_provider {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: terraform or its provider mirror ({}) is not installed",
            dir.display()
        );
        None
    }
}

struct Tf<'a> {
    dir: &'a Path,
    app: &'a Appliance,
}

impl Tf<'_> {
    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("terraform");
        cmd.current_dir(self.dir)
            .args(args)
            .args(["-input=false", "-no-color"])
            .env("TF_CLI_CONFIG_FILE", self.dir.join("cli.tfrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_VAR_endpoint", &self.app.endpoint)
            .env("TF_VAR_access_key", &self.app.access_key)
            .env("TF_VAR_secret_key", &self.app.secret_key)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        for (k, v) in vars {
            cmd.env(format!("TF_VAR_{k}"), v);
        }
        cmd.output().unwrap()
    }

    fn ok(&self, args: &[&str], vars: &[(&str, &str)]) -> String {
        let out = self.run(args, vars);
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "terraform {args:?} failed:\n{text}");
        text
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn terraform_applies_plans_updates_and_destroys_a_key_with_a_policy_and_an_alias() {
    let Some(mirror) = mirror() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let app = Appliance::start(data.path());
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform/main.tf"),
        work.path().join("main.tf"),
    )
    .unwrap();
    std::fs::write(
        work.path().join("cli.tfrc"),
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n    include = \
             [\"registry.terraform.io/hashicorp/aws\"]\n  }}\n  direct {{\n    exclude = \
             [\"registry.terraform.io/hashicorp/aws\"]\n  }}\n}}\n",
            mirror.display()
        ),
    )
    .unwrap();
    let tf = Tf {
        dir: work.path(),
        app: &app,
    };
    tf.ok(&["init"], &[]);
    tf.ok(&["apply", "-auto-approve"], &[]);
    // Read back, nothing differs: the policy is returned as it was set, rotation is on.
    let plan = tf.run(&["plan", "-detailed-exitcode"], &[]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "plan found changes:\n{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let kms = admin(&app);
    let alias = kms
        .list_aliases()
        .send()
        .await
        .unwrap()
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some("alias/terraform-test"))
        .cloned()
        .unwrap();
    let key = alias.target_key_id().unwrap().to_owned();
    let status = kms
        .get_key_rotation_status()
        .key_id(&key)
        .send()
        .await
        .unwrap();
    assert!(status.key_rotation_enabled());
    // An update in place: description and policy.
    let vars = [("description", "changed by terraform"), ("sid", "root2")];
    tf.ok(&["apply", "-auto-approve"], &vars);
    let plan = tf.run(&["plan", "-detailed-exitcode"], &vars);
    assert_eq!(plan.status.code(), Some(0));
    let policy = kms.get_key_policy().key_id(&key).send().await.unwrap();
    assert!(policy.policy().unwrap().contains("root2"));
    let meta = kms.describe_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        meta.key_metadata().unwrap().description(),
        Some("changed by terraform")
    );
    tf.ok(&["destroy", "-auto-approve"], &vars);
    let meta = kms.describe_key().key_id(&key).send().await.unwrap();
    assert_eq!(
        meta.key_metadata()
            .unwrap()
            .key_state()
            .map(aws_sdk_kms::types::KeyState::as_str),
        Some("PendingDeletion")
    );
}
