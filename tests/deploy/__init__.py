"""Deployment: the appliance image, compose, and Ansible against a container target."""
