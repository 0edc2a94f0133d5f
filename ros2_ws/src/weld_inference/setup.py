from glob import glob

from setuptools import find_packages, setup

package_name = 'weld_inference'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools', 'numpy', 'onnxruntime'],
    zip_safe=True,
    maintainer='weldvision developers',
    maintainer_email='dev@weldvision.org',
    description='Weld-defect inference on the board: ONNX Runtime with a rule-based fallback.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'inference_node = weld_inference.inference_node:main',
            'weld-deploy = weld_inference.deploy.__main__:main',
        ],
    },
)
