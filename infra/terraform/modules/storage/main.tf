# The platform bucket and the least-privilege roles that use it.
#   datasets/     read by the Ray nodes (uploaded by people, not by jobs)
#   checkpoints/  read and written by the Ray nodes (train.storage_path)
#   mlflow/       read and written by the MLflow server only (clients go through its proxy)
locals {
  bucket_arn = aws_s3_bucket.platform.arn
  prefixes   = { datasets = "datasets/", checkpoints = "checkpoints/", mlflow = "mlflow/" }
}

resource "aws_s3_bucket" "platform" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
}

resource "aws_s3_bucket_versioning" "platform" {
  bucket = aws_s3_bucket.platform.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "platform" {
  bucket = aws_s3_bucket.platform.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_public_access_block" "platform" {
  bucket                  = aws_s3_bucket.platform.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "platform" {
  bucket     = aws_s3_bucket.platform.id
  depends_on = [aws_s3_bucket_versioning.platform]

  rule {
    id     = "expire-old-checkpoints"
    status = "Enabled"
    filter {
      prefix = local.prefixes.checkpoints
    }
    dynamic "expiration" {
      for_each = var.checkpoint_retention_days > 0 ? [var.checkpoint_retention_days] : []
      content {
        days = expiration.value
      }
    }
    noncurrent_version_expiration {
      noncurrent_days = var.checkpoint_noncurrent_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# TLS only: every request over plain HTTP is denied, whoever makes it.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "platform" {
  bucket     = aws_s3_bucket.platform.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.platform]
}

# ---- roles -------------------------------------------------------------------------------

data "aws_iam_policy_document" "ray_node_trust" {
  statement {
    sid     = "Ec2Nodes"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
  dynamic "statement" {
    for_each = var.eks_oidc_provider_arn == null ? [] : [var.eks_oidc_provider_arn]
    content {
      sid     = "KubeRayServiceAccount"
      actions = ["sts:AssumeRoleWithWebIdentity"]
      principals {
        type        = "Federated"
        identifiers = [statement.value]
      }
      condition {
        test     = "StringEquals"
        variable = "${replace(statement.value, "/^.*oidc-provider\\//", "")}:sub"
        values   = ["system:serviceaccount:${var.kubernetes_service_account}"]
      }
      condition {
        test     = "StringEquals"
        variable = "${replace(statement.value, "/^.*oidc-provider\\//", "")}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

# ListBucket is granted on the bucket without a prefix condition: without it S3 answers a
# HEAD of a missing key with 403 instead of 404 (a HEAD carries no s3:prefix), which breaks the
# existence checks pyarrow's S3 filesystem makes for Ray Train's storage_path. It lists key
# names only; object access stays limited to the prefixes below.
# With an SSE-KMS key, every role that reads or writes objects also needs the key.
data "aws_iam_policy_document" "bucket_key" {
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "ray_node_s3" {
  source_policy_documents = [data.aws_iam_policy_document.bucket_key.json]
  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "ReadDatasets"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn}/${local.prefixes.datasets}*"]
  }
  statement {
    sid       = "ReadWriteCheckpoints"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/${local.prefixes.checkpoints}*"]
  }
}

resource "aws_iam_role" "ray_node" {
  name               = "${var.name_prefix}-ray-node"
  assume_role_policy = data.aws_iam_policy_document.ray_node_trust.json
}

resource "aws_iam_role_policy" "ray_node_s3" {
  name   = "s3-datasets-read-checkpoints-rw"
  role   = aws_iam_role.ray_node.id
  policy = data.aws_iam_policy_document.ray_node_s3.json
}

resource "aws_iam_instance_profile" "ray_node" {
  name = "${var.name_prefix}-ray-node"
  role = aws_iam_role.ray_node.name
}

# The head node runs Ray's autoscaler: it launches and terminates the worker instances, and
# hands them the node role. Its S3 access is the nodes' (drivers run there).
data "aws_iam_policy_document" "ray_head_autoscaler" {
  statement {
    sid = "LaunchWorkers"
    actions = ["ec2:RunInstances", "ec2:TerminateInstances", "ec2:StartInstances", "ec2:StopInstances",
      "ec2:CreateTags", "ec2:DescribeInstances", "ec2:DescribeImages", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
    "ec2:DescribeKeyPairs", "ec2:DescribeInstanceTypes", "ec2:DescribeAvailabilityZones"]
    resources = ["*"]
  }
  statement {
    sid       = "PassNodeRole"
    actions   = ["iam:PassRole", "iam:GetInstanceProfile"]
    resources = [aws_iam_role.ray_node.arn, aws_iam_instance_profile.ray_node.arn]
  }
}

resource "aws_iam_role" "ray_head" {
  name               = "${var.name_prefix}-ray-head"
  assume_role_policy = data.aws_iam_policy_document.ec2_trust.json
}

resource "aws_iam_role_policy" "ray_head_s3" {
  name   = "s3-datasets-read-checkpoints-rw"
  role   = aws_iam_role.ray_head.id
  policy = data.aws_iam_policy_document.ray_node_s3.json
}

resource "aws_iam_role_policy" "ray_head_autoscaler" {
  name   = "ray-autoscaler"
  role   = aws_iam_role.ray_head.id
  policy = data.aws_iam_policy_document.ray_head_autoscaler.json
}

resource "aws_iam_instance_profile" "ray_head" {
  name = "${var.name_prefix}-ray-head"
  role = aws_iam_role.ray_head.name
}

data "aws_iam_policy_document" "ec2_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "mlflow_s3" {
  source_policy_documents = [data.aws_iam_policy_document.bucket_key.json]
  statement {
    sid       = "ListBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
  }
  statement {
    sid       = "ReadWriteArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${local.bucket_arn}/${local.prefixes.mlflow}*"]
  }
}

resource "aws_iam_role" "mlflow" {
  name               = "${var.name_prefix}-mlflow-server"
  assume_role_policy = data.aws_iam_policy_document.ec2_trust.json
}

resource "aws_iam_role_policy" "mlflow_s3" {
  name   = "s3-mlflow-artifacts-rw"
  role   = aws_iam_role.mlflow.id
  policy = data.aws_iam_policy_document.mlflow_s3.json
}

resource "aws_iam_instance_profile" "mlflow" {
  name = "${var.name_prefix}-mlflow-server"
  role = aws_iam_role.mlflow.name
}
