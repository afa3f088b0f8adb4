output "bucket_name" {
  description = "The platform bucket."
  value       = module.storage.bucket_name
}

output "datasets_uri" {
  description = "Where datasets go: --data kinetics:<this>/kinetics400"
  value       = module.storage.datasets_uri
}

output "checkpoints_uri" {
  description = "train.storage_path for jobs on the cluster."
  value       = module.storage.checkpoints_uri
}

output "ray_node_instance_profile" {
  description = "Instance profile of the Ray workers (cluster/aws-gpu.yaml: IamInstanceProfile.Name)."
  value       = module.storage.ray_node_instance_profile_name
}

output "ray_head_instance_profile" {
  description = "Instance profile of the Ray head (the autoscaler's EC2 rights)."
  value       = module.storage.ray_head_instance_profile_name
}

output "ray_node_ami" {
  description = "ImageId for cluster/aws-gpu.yaml (replaces ami-REPLACE_WITH_RAY_NODE_AMI)."
  value       = nonsensitive(data.aws_ssm_parameter.ray_ami.value)
}

output "ray_node_role_arn" {
  description = "Role of the Ray nodes (and, with IRSA, of the KubeRay service account)."
  value       = module.storage.ray_node_role_arn
}

output "mlflow_tracking_uri" {
  description = "--tracking-uri for jobs (log in with the admin secret's credentials)."
  value       = var.create_mlflow_server ? module.mlflow[0].tracking_uri : null
}

output "mlflow_admin_secret_arn" {
  description = "Secrets Manager secret holding MLflow's admin login (written by the server on first boot)."
  value       = var.create_mlflow_server ? module.mlflow[0].admin_secret_arn : null
}
