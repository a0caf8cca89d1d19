"""Label Studio ML backend serving M2N2 click-to-segment (Flask app in ``backend.app``, model in ``backend.model``)."""
