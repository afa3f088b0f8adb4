variable "name_prefix" {
  type = string
}

variable "vpc_id" {
  description = "VPC of the server and the database."
  type        = string
}

variable "server_subnet_id" {
  description = "Subnet of the server instance."
  type        = string
}

variable "database_subnet_ids" {
  description = "Subnets (two AZs at least) of the PostgreSQL instance."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "CIDRs that may reach MLflow's port."
  type        = list(string)
}

variable "instance_type" {
  type = string
}

variable "mlflow_version" {
  type = string
}

variable "db_instance_class" {
  type = string
}

variable "bucket_name" {
  type = string
}

variable "artifacts_uri" {
  description = "s3://bucket/mlflow: where the server proxies artifacts to."
  type        = string
}

variable "instance_profile_name" {
  description = "The server's instance profile (S3 access to mlflow/ only)."
  type        = string
}

variable "role_name" {
  description = "The server's role: gets read access to the database secret and write access to the admin secret."
  type        = string
}

variable "port" {
  type    = number
  default = 5000
}

variable "ray_role_names" {
  description = "Roles of the Ray head and nodes: they may read the MLflow login secret."
  type        = list(string)
  default     = []
}
