# dynvid's AWS resources: one bucket for datasets, checkpoints and MLflow artifacts, IAM roles
# with least-privilege S3 access for the Ray nodes and the MLflow server, and the MLflow
# tracking server (EC2 + PostgreSQL, behind MLflow's basic-auth app). See the README, "Running
# on a cluster". Credentials never appear here: roles for S3, Secrets Manager for passwords.
provider "aws" {
  region = var.region
  default_tags {
    tags = { project = var.name_prefix, managed-by = "terraform" }
  }
}

module "storage" {
  source                     = "./modules/storage"
  name_prefix                = var.name_prefix
  bucket_name                = var.bucket_name
  checkpoint_retention_days  = var.checkpoint_retention_days
  checkpoint_noncurrent_days = var.checkpoint_noncurrent_days
  kms_key_arn                = var.kms_key_arn
  force_destroy              = var.force_destroy
  eks_oidc_provider_arn      = var.eks_oidc_provider_arn
  kubernetes_service_account = var.kubernetes_service_account
}

module "mlflow" {
  source                = "./modules/mlflow"
  count                 = var.create_mlflow_server ? 1 : 0
  name_prefix           = var.name_prefix
  vpc_id                = var.vpc_id
  server_subnet_id      = var.server_subnet_id
  database_subnet_ids   = var.database_subnet_ids
  allowed_cidrs         = var.allowed_cidrs
  instance_type         = var.mlflow_instance_type
  mlflow_version        = var.mlflow_version
  db_instance_class     = var.db_instance_class
  bucket_name           = module.storage.bucket_name
  artifacts_uri         = module.storage.mlflow_artifacts_uri
  instance_profile_name = module.storage.mlflow_instance_profile_name
  role_name             = module.storage.mlflow_role_name
  ray_role_names        = module.storage.ray_role_names
}

# The Ray nodes' image: AWS's current Deep Learning Base AMI (NVIDIA driver, CUDA, Ubuntu 22.04).
# Ray 2.60's `latest_dlami` still resolves to an Ubuntu 18.04 image, too old for torch 2.14.
data "aws_ssm_parameter" "ray_ami" {
  name = var.ray_ami_ssm_parameter
}
