# MLflow tracking server: one EC2 instance running `mlflow server --app-name basic-auth`
# (every request needs a login), PostgreSQL on RDS as backend store (and basic-auth's user
# store), artifacts proxied to the platform bucket's mlflow/ prefix. No password is written
# by terraform: RDS manages the database password in Secrets Manager, and the server
# generates MLflow's admin password on first boot and stores it in its own secret.
data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

resource "aws_security_group" "server" {
  name        = "${var.name_prefix}-mlflow-server"
  description = "MLflow tracking server"
  vpc_id      = var.vpc_id
  lifecycle {
    precondition {
      condition     = var.vpc_id != null && var.server_subnet_id != null && length(var.database_subnet_ids) >= 2
      error_message = "The MLflow server needs vpc_id, server_subnet_id and two database_subnet_ids (or set create_mlflow_server = false)."
    }
  }
  ingress {
    description = "MLflow (basic auth)"
    from_port   = var.port
    to_port     = var.port
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }
  egress {
    description = "package installs, S3, Secrets Manager, RDS"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "database" {
  name        = "${var.name_prefix}-mlflow-db"
  description = "MLflow backend store: PostgreSQL from the server only"
  vpc_id      = var.vpc_id
  ingress {
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.server.id]
  }
}

resource "aws_db_subnet_group" "mlflow" {
  name       = "${var.name_prefix}-mlflow"
  subnet_ids = var.database_subnet_ids
}

resource "aws_db_instance" "mlflow" {
  identifier                  = "${var.name_prefix}-mlflow"
  engine                      = "postgres"
  engine_version              = "16"
  instance_class              = var.db_instance_class
  allocated_storage           = 20
  storage_encrypted           = true
  db_name                     = "mlflow"
  username                    = "mlflow"
  manage_master_user_password = true
  db_subnet_group_name        = aws_db_subnet_group.mlflow.name
  vpc_security_group_ids      = [aws_security_group.database.id]
  publicly_accessible         = false
  backup_retention_period     = 7
  deletion_protection         = true
  skip_final_snapshot         = false
  final_snapshot_identifier   = "${var.name_prefix}-mlflow-final"
}

resource "aws_secretsmanager_secret" "admin" {
  name        = "${var.name_prefix}/mlflow/admin"
  description = "MLflow basic-auth admin login, written by the server on first boot"
}

data "aws_iam_policy_document" "secrets" {
  statement {
    sid       = "ReadDatabasePassword"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_db_instance.mlflow.master_user_secret[0].secret_arn]
  }
  statement {
    sid       = "WriteAdminLogin"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
    resources = [aws_secretsmanager_secret.admin.arn]
  }
}

resource "aws_iam_role_policy" "secrets" {
  name   = "mlflow-secrets"
  role   = var.role_name
  policy = data.aws_iam_policy_document.secrets.json
}

# The Ray nodes read the MLflow login into ~/.mlflow/credentials at setup (cluster/aws-gpu.yaml).
data "aws_iam_policy_document" "read_login" {
  statement {
    sid       = "ReadMlflowLogin"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.admin.arn]
  }
}

resource "aws_iam_role_policy" "ray_read_login" {
  for_each = toset(var.ray_role_names)
  name     = "read-mlflow-login"
  role     = each.value
  policy   = data.aws_iam_policy_document.read_login.json
}

resource "aws_instance" "server" {
  ami                    = data.aws_ssm_parameter.al2023.value
  instance_type          = var.instance_type
  subnet_id              = var.server_subnet_id
  vpc_security_group_ids = [aws_security_group.server.id]
  iam_instance_profile   = var.instance_profile_name
  metadata_options {
    http_tokens = "required"
  }
  root_block_device {
    volume_size = 20
    encrypted   = true
  }
  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    mlflow_version   = var.mlflow_version
    db_host          = aws_db_instance.mlflow.address
    db_secret_arn    = aws_db_instance.mlflow.master_user_secret[0].secret_arn
    admin_secret_arn = aws_secretsmanager_secret.admin.arn
    artifacts_uri    = var.artifacts_uri
    port             = var.port
  })
  user_data_replace_on_change = true
  lifecycle {
    ignore_changes = [ami] # a new AL2023 release must not replace the server (and its address)
  }
  tags = {
    Name = "${var.name_prefix}-mlflow-server"
  }
}
