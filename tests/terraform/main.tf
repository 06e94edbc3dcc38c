# Terraform's aws_kms_key (with a key policy, rotation and tags) and aws_kms_alias against the
# appliance: tests/tests/terraform.rs applies, plans (no changes), updates and destroys it.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}
variable "endpoint" { type = string }
variable "access_key" { type = string }
variable "secret_key" { type = string }
variable "description" {
  type    = string
  default = "made by terraform"
}
variable "sid" {
  type    = string
  default = "root"
}
provider "aws" {
  region                      = "us-east-1"
  access_key                  = var.access_key
  secret_key                  = var.secret_key
  skip_metadata_api_check     = true
  skip_region_validation      = true
  endpoints {
    kms = var.endpoint
    sts = var.endpoint
  }
}
resource "aws_kms_key" "k" {
  description             = var.description
  deletion_window_in_days = 7
  enable_key_rotation     = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = var.sid
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::111122223333:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
  tags = { team = "payments" }
}
resource "aws_kms_alias" "a" {
  name          = "alias/terraform-test"
  target_key_id = aws_kms_key.k.key_id
}
