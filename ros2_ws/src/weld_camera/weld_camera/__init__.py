"""weld_camera: synchronised RGB-D frame pairs from a simulator, an OpenCV device, another driver or a bag."""
