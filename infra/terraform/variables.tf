variable "region" {
  description = "AWS region of every resource (the Ray cluster config uses the same one)."
  type        = string
  default     = "us-west-2"
}

variable "name_prefix" {
  description = "Prefix of every name; the Ray node instance profile is \"<prefix>-ray-node\" (cluster/aws-gpu.yaml)."
  type        = string
  default     = "dynvid"
}

variable "bucket_name" {
  description = "The platform bucket: datasets/, checkpoints/ and mlflow/ prefixes. Globally unique."
  type        = string
}

variable "checkpoint_retention_days" {
  description = "Current objects under checkpoints/ expire after this many days (0 keeps them)."
  type        = number
  default     = 180
}

variable "checkpoint_noncurrent_days" {
  description = "Overwritten or deleted checkpoint versions are removed after this many days."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS; null uses SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket (keep false in production)."
  type        = bool
  default     = false
}

variable "eks_oidc_provider_arn" {
  description = "EKS OIDC provider ARN: lets the KubeRay service account assume the Ray node role (IRSA); null for EC2 only."
  type        = string
  default     = null
}

variable "kubernetes_service_account" {
  description = "namespace:name of the KubeRay pods' service account (cluster/kuberay/raycluster.yaml)."
  type        = string
  default     = "default:dynvid-ray"
}

variable "create_mlflow_server" {
  description = "Create the MLflow tracking server (EC2 + PostgreSQL RDS behind MLflow's basic-auth app)."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "VPC of the MLflow server and its database (the Ray cluster's VPC)."
  type        = string
  default     = null
}

variable "server_subnet_id" {
  description = "Subnet of the MLflow server instance (private; reach it from the Ray nodes or a VPN)."
  type        = string
  default     = null
}

variable "database_subnet_ids" {
  description = "At least two private subnets in different AZs for the PostgreSQL instance."
  type        = list(string)
  default     = []
}

variable "allowed_cidrs" {
  description = "CIDRs allowed to reach MLflow's port (the Ray cluster's subnets)."
  type        = list(string)
  default     = []
}

variable "mlflow_instance_type" {
  description = "Instance type of the MLflow server."
  type        = string
  default     = "t3.small"
}

variable "mlflow_version" {
  description = "MLflow release installed on the server (match the client in pyproject.toml)."
  type        = string
  default     = "3.17.2"
}

variable "db_instance_class" {
  description = "RDS instance class of MLflow's PostgreSQL backend store."
  type        = string
  default     = "db.t4g.micro"
}

variable "ray_ami_ssm_parameter" {
  description = "SSM parameter naming the Ray nodes' AMI (cluster/aws-gpu.yaml: ImageId = terraform output ray_node_ami)."
  type        = string
  default     = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
}
