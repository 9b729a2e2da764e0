package com.mdeploy.pose

import android.content.Context
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Paint
import android.util.AttributeSet
import android.view.View
import com.mdeploy.pose.generated.Pose
import com.mdeploy.pose.generated.PoseModelConfig
import com.mdeploy.pose.generated.ViewMapping

/** Draws the skeleton over the camera preview (which fills the view, cropping the frame). */
class OverlayView(
    context: Context,
    attrs: AttributeSet? = null,
) : View(context, attrs) {
    private var pose: Pose? = null
    private val bonePaint =
        Paint().apply {
            color = Color.GREEN
            strokeWidth = 8f
            style = Paint.Style.STROKE
            isAntiAlias = true
        }
    private val jointPaint =
        Paint().apply {
            color = Color.YELLOW
            style = Paint.Style.FILL
            isAntiAlias = true
        }

    /** Show `pose` (in the pixels of a `frameWidth` x `frameHeight` frame). */
    fun show(
        pose: Pose,
        frameWidth: Int,
        frameHeight: Int,
    ) {
        this.pose = ViewMapping.toView(pose, frameWidth, frameHeight, width, height, fill = true)
        invalidate()
    }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        val current = pose ?: return
        for ((a, b) in current.bones()) {
            canvas.drawLine(a.x, a.y, b.x, b.y, bonePaint)
        }
        for (k in current.keypoints) {
            if (k.score >= PoseModelConfig.SCORE_THRESHOLD) {
                canvas.drawCircle(k.x, k.y, 10f, jointPaint)
            }
        }
    }
}
