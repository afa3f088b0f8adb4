variable "name_prefix" {
  description = "Prefix of the role and instance-profile names."
  type        = string
}

variable "bucket_name" {
  description = "The platform bucket."
  type        = string
}

variable "checkpoint_retention_days" {
  description = "Current objects under checkpoints/ expire after this many days (0 keeps them)."
  type        = number
  default     = 180
}

variable "checkpoint_noncurrent_days" {
  description = "Noncurrent checkpoint versions are removed after this many days."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS; null uses SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow destroying a non-empty bucket."
  type        = bool
  default     = false
}

variable "eks_oidc_provider_arn" {
  description = "EKS OIDC provider ARN for IRSA; null: EC2 nodes only."
  type        = string
  default     = null
}

variable "kubernetes_service_account" {
  description = "namespace:name of the KubeRay service account allowed to assume the Ray node role."
  type        = string
  default     = "default:dynvid-ray"
}
