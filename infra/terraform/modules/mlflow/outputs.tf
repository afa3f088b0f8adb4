output "tracking_uri" {
  value = "http://${aws_instance.server.private_ip}:${var.port}"
}

output "admin_secret_arn" {
  value = aws_secretsmanager_secret.admin.arn
}
