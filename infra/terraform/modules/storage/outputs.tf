output "bucket_name" {
  value = aws_s3_bucket.platform.id
}

output "bucket_arn" {
  value = aws_s3_bucket.platform.arn
}

output "datasets_uri" {
  value = "s3://${aws_s3_bucket.platform.id}/datasets"
}

output "checkpoints_uri" {
  value = "s3://${aws_s3_bucket.platform.id}/checkpoints"
}

output "mlflow_artifacts_uri" {
  value = "s3://${aws_s3_bucket.platform.id}/mlflow"
}

output "ray_node_role_arn" {
  value = aws_iam_role.ray_node.arn
}

output "ray_node_instance_profile_name" {
  value = aws_iam_instance_profile.ray_node.name
}

output "mlflow_role_name" {
  value = aws_iam_role.mlflow.name
}

output "mlflow_instance_profile_name" {
  value = aws_iam_instance_profile.mlflow.name
}

output "ray_head_instance_profile_name" {
  value = aws_iam_instance_profile.ray_head.name
}

output "ray_role_names" {
  description = "The Ray head and node roles (they read MLflow's login from Secrets Manager)."
  value       = [aws_iam_role.ray_head.name, aws_iam_role.ray_node.name]
}
