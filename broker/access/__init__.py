"""Access: principals, projects, quotas, clearance, roles and facility seeding."""
