"""Who may do what: principals as server ACL users, and the policy checked before every operation."""
