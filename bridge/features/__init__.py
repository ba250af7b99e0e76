"""What the bridge does: bridge health, Home Assistant discovery, IVH and Desk."""
