#!/usr/bin/env bash
# Makes sure PostgreSQL runs on 127.0.0.1:5432 with the role and database orderflow uses
# (orderflow/orderflow, allowed to create the per-test databases and roles). Installs it with apt
# if missing.
source "$(dirname "$0")/lib.sh"

if ! port_open 127.0.0.1 5432; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql
  fi
  step "Starting PostgreSQL"
  version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
  [[ -n $version ]] || die "no PostgreSQL cluster under /etc/postgresql"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 127.0.0.1 5432 PostgreSQL 30
fi

as_postgres psql -qtA -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
SELECT 'CREATE ROLE orderflow LOGIN CREATEDB PASSWORD ''orderflow'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderflow') \gexec
-- CREATEROLE: a test makes a role per service to show that each reaches only its own schema.
SELECT 'ALTER ROLE orderflow CREATEROLE'
WHERE NOT (SELECT rolcreaterole FROM pg_roles WHERE rolname = 'orderflow') \gexec
SELECT 'CREATE DATABASE orderflow OWNER orderflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'orderflow') \gexec
SQL
note "PostgreSQL ready on 127.0.0.1:5432 (database orderflow, role orderflow)"
