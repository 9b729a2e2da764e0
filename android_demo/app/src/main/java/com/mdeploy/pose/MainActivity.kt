package com.mdeploy.pose

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.Matrix
import android.os.Bundle
import android.os.SystemClock
import android.widget.TextView
import androidx.activity.ComponentActivity
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.core.content.ContextCompat
import com.mdeploy.pose.generated.EstimatorOptions
import com.mdeploy.pose.generated.Pose
import com.mdeploy.pose.generated.PoseEstimator
import com.mdeploy.pose.generated.PoseModelConfig
import com.mdeploy.pose.generated.PoseSmoother
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/** Camera preview, every person drawn over it, and frame rate and inference time. */
class MainActivity : ComponentActivity() {
    private lateinit var previewView: PreviewView
    private lateinit var overlay: OverlayView
    private lateinit var stats: TextView
    private val analysisExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private var estimator: PoseEstimator? = null
    private val smoother = PoseSmoother()
    private var lastFrameNanos = 0L

    private val requestPermission =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
            if (granted) startCamera() else stats.text = getString(R.string.camera_denied)
        }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        previewView = findViewById(R.id.preview)
        overlay = findViewById(R.id.overlay)
        stats = findViewById(R.id.stats)
        estimator = PoseEstimator(this, EstimatorOptions())
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestPermission.launch(Manifest.permission.CAMERA)
        }
    }

    private fun startCamera() {
        val future = ProcessCameraProvider.getInstance(this)
        future.addListener({
            val provider = future.get()
            val preview = Preview.Builder().build()
            preview.setSurfaceProvider(previewView.surfaceProvider)
            val analysis =
                ImageAnalysis
                    .Builder()
                    .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                    .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                    .build()
            analysis.setAnalyzer(analysisExecutor) { image -> analyze(image) }
            provider.unbindAll()
            provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(this))
    }

    private fun analyze(image: ImageProxy) {
        val bitmap = upright(image.toBitmap(), image.imageInfo.rotationDegrees)
        image.close()
        val current = estimator ?: return
        val people = current.estimate(bitmap)
        // One person is steadied over frames; several are shown as found (nothing follows a person between frames).
        val shown = if (PoseModelConfig.MULTI_PERSON) people else people.map { steady(it) }
        val now = SystemClock.elapsedRealtimeNanos()
        val fps = if (lastFrameNanos == 0L) 0f else 1e9f / (now - lastFrameNanos)
        lastFrameNanos = now
        val latencyMs = current.lastLatencyMs
        runOnUiThread {
            overlay.show(shown, bitmap.width, bitmap.height)
            stats.text = getString(R.string.stats, fps, latencyMs)
        }
    }

    private fun steady(pose: Pose): Pose {
        val points = pose.keypoints.map { floatArrayOf(it.x, it.y, it.score) }.toTypedArray()
        val smoothed = Pose.fromPoints(smoother.smooth(points), pose.latencyMs)
        // positions are steadied; each keypoint's depth (a 3-D model's) is shown as found
        return smoothed.copy(keypoints = smoothed.keypoints.mapIndexed { i, k -> k.copy(depthMm = pose.keypoints[i].depthMm) })
    }

    private fun upright(
        bitmap: Bitmap,
        degrees: Int,
    ): Bitmap {
        if (degrees == 0) {
            return bitmap
        }
        val matrix = Matrix()
        matrix.postRotate(degrees.toFloat())
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, matrix, true)
    }

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.shutdown()
        estimator?.close()
    }
}
