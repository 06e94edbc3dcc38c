//! What the end-to-end test files share: an `aws-sdk-kms` client for a running appliance.
#![allow(dead_code)] // each test file uses a part of it

use aws_sdk_kms::{
    Client,
    config::{BehaviorVersion, Credentials, Region},
};
use ekms_tests::Appliance;

/// An SDK client for `app` with the given credentials.
pub(crate) fn client(app: &Appliance, access: &str, secret: &str) -> Client {
    Client::from_conf(
        aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&app.endpoint)
            .credentials_provider(Credentials::new(access, secret, None, None, "test"))
            .build(),
    )
}

/// An SDK client with the appliance's admin credential.
pub(crate) fn admin(app: &Appliance) -> Client {
    client(app, &app.access_key, &app.secret_key)
}
